"""Atomic file writes and JSONL helpers shared by every stage.

Every file is written under a temporary name in the same directory and renamed into place,
so a killed run never leaves a half-written file behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import UserError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        with disk_full_as_user_error(path):
            yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class DiskFull(UserError):
    """A write that failed for lack of space (one line, like any UserError)."""


@contextmanager
def disk_full_as_user_error(path: Path) -> Iterator[None]:
    """A write to ``path`` that fails because its filesystem is full becomes a one-line DiskFull:
    ENOSPC or EDQUOT, or any error (torch.save and safetensors report a short write in their own
    words) raised while the filesystem has no free block. Checked before the caller removes its
    temporary, which frees the space again. Nested writes name the outermost ``path``, the one
    the user asked for (an inner one is a temporary)."""
    try:
        yield
    except Exception as err:
        full = isinstance(err, DiskFull) or isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        try:
            full = full or os.statvfs(path.parent).f_bavail == 0
        except OSError:
            pass
        if full:
            raise DiskFull(f"no space left on the device to write {path}; free some space and run the command again "
                           "(train: with --resume)") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def parse_json(text: str, where: str) -> Any:
    """``json.loads``, with any malformed or absurdly nested text a one-line UserError naming ``where``."""
    from .errors import UserError

    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None


def read_json(path: str | os.PathLike) -> Any:
    from .errors import UserError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    return parse_json(text, str(path))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")


def read_jsonl(path: str | os.PathLike, *, torn_tail_ok: bool = False) -> list:
    """The JSON value of each non-blank line; a malformed line is a UserError naming the file's
    line. ``torn_tail_ok``: a last line without its newline that does not parse (a write cut
    short by a kill or a full disk) is left out instead."""
    from .errors import UserError

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(parse_json(line, f"{path}:{number}"))
        except UserError:
            if torn_tail_ok and number == len(lines) and not line.endswith("\n"):
                break
            raise
    return rows


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON line (metric logs): written with one call, flushed and synced to disk, so
    that a kill loses at most the line being written."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with disk_full_as_user_error(Path(path)), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


def drop_torn_tail(path: str | os.PathLike) -> None:
    """Cut a last line without its newline that does not parse (see :func:`read_jsonl`), so that
    appends start on a line of their own."""
    path = Path(path)
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except ValueError:
        with open(path, "r+b") as f:
            f.truncate(start)
        return
    with open(path, "ab") as f:  # a whole value without its newline: keep it, end its line
        f.write(b"\n")


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; swap it into place if the block succeeds.

    An existing ``path`` is replaced only after the new directory is complete.
    """
    path = Path(os.path.abspath(path))  # "." or "x/.." has no name to put a temporary beside
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with disk_full_as_user_error(path):
            yield tmp
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp creates 0700 directories
        for file in tmp.rglob("*"):  # and libraries that write through mkstemp (safetensors) 0600 files
            if file.is_file() and not file.is_symlink():
                os.chmod(file, 0o666 & ~mask)
        replace_entry(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# ----------------------------------------------------------------------------- output policy
# Every command writes only its own files: an existing non-empty output dir is refused unless
# --overwrite, which replaces the entries the command writes and leaves every other entry alone;
# no output may be, or hold, one of the command's inputs.


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str = "--out") -> None:
    """UserError when ``out`` is one of ``inputs`` or a dir holding one (writing it would replace it)."""
    from .errors import UserError

    target = Path(out).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source or target in source.parents:
            raise UserError(f"{option} {out} would write onto the input {given}; choose another {option}")


def check_writable(out: str | os.PathLike, option: str = "--out") -> None:
    """UserError unless ``out`` can be created or written: its nearest existing ancestor is a
    writable directory."""
    from .errors import UserError

    path = Path(out).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing.is_dir():
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"{option} {out}: {existing} is not writable")
    elif existing != path:
        raise UserError(f"{option} {out}: {existing} is a file, not a directory")


def check_output_dir(out: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                     writes: Iterable[str] = (), option: str = "--out") -> None:
    """The output policy of a command writing into dir ``out`` (before any work): not an input,
    writable, empty unless ``overwrite``; with ``overwrite`` each entry of ``writes`` it would
    replace must be writable (a read-only file is not replaced)."""
    from .errors import UserError

    out = Path(out)
    check_not_input(out, inputs, option)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} exists and is not a directory")
    check_writable(out, option)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{option} {out} exists and is not empty; pass --overwrite to replace this command's files in it")
        # the mode bits, not os.access: a read-only file says "keep me" even to root
        locked = [name for name in writes if (out / name).exists() and not os.stat(out / name).st_mode & 0o222]
        if locked:
            raise UserError(f"{out / locked[0]} is read-only; not replacing it")


def check_output_file(out: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                      option: str = "--out") -> None:
    """The output policy of a command writing the one file ``out`` (before any work)."""
    from .errors import UserError

    out = Path(out)
    check_not_input(out, inputs, option)
    if out.is_dir():
        raise UserError(f"{option} {out} is a directory")
    check_writable(out, option)
    if out.exists() and not overwrite:
        raise UserError(f"{option} {out} exists; pass --overwrite to replace it")


@contextmanager
def output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; when the block succeeds, it becomes ``path`` if that is
    absent, else each of its entries replaces the entry of that name in ``path`` (entries of
    ``path`` the block did not write stay). An existing ``path`` is written in place, never
    swapped: it may be the working directory (``--out .``) or sit in a read-only parent."""
    path = Path(path)
    if not path.is_dir():
        with atomic_dir(path) as tmp:
            yield tmp
        return
    tmp = Path(tempfile.mkdtemp(prefix=".coinfluence.", suffix=".tmp", dir=path))
    try:
        with disk_full_as_user_error(path / "summary.json"):
            yield tmp
        for entry in sorted(tmp.iterdir(), key=lambda e: e.name == "summary.json"):  # the summary last
            replace_entry(entry, path / entry.name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def replace_entry(new: Path, old: Path) -> None:
    """Move file or dir ``new`` onto ``old`` (a dir is swapped whole: renamed aside, then removed)."""
    if old.is_dir() and not old.is_symlink():
        aside = old.with_name(f".{old.name}.old")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(old, aside)
        os.replace(new, old)
        shutil.rmtree(aside)
    else:
        os.replace(new, old)


RUN_LOCK = ".lock"
# How long a lock that is held is retried before the holder counts as another run: long enough to
# outwait a brief probe (`run_lanes.py --status` takes a unit's lock for a moment to see whether
# it is free), far too short to wait out a real run.
LOCK_PATIENCE_S = 0.5


@contextmanager
def exclusive_lock(lock_file: str | os.PathLike, busy: str, patience: float = LOCK_PATIENCE_S) -> Iterator[None]:
    """Hold ``lock_file`` exclusively for the block, or raise ``UserError(busy)`` where another
    process holds it for longer than ``patience`` seconds (the lock dies with its process, so a
    killed holder leaves none behind)."""
    import fcntl
    import time

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UserError(busy) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold RUN/.lock for the block: a second process writing the same run is refused."""
    with exclusive_lock(Path(run_dir) / RUN_LOCK, f"{run_dir} is in use by another coinfluence process; wait for it to end"):
        yield


def remove_stale_temporaries(run_dir: str | os.PathLike) -> None:
    """Remove the temporary files and dirs (``.NAME.XXXX.tmp``) that killed writes left in a run
    and its checkpoint dirs; only while holding the run's lock, when no write can be under way."""
    run_dir = Path(run_dir)
    for folder in (run_dir, *(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith("."))):
        remove_temporaries(folder)


def remove_temporaries(folder: str | os.PathLike, names: Iterable[str] = ("*",)) -> None:
    """Remove the temporaries that killed writes of the entries ``names`` (glob patterns) left
    in ``folder``: ``.NAME.XXXX.tmp``, the names :func:`atomic_path` and :func:`atomic_dir` use."""
    for name in names:
        for entry in Path(folder).glob(f".{name}.*.tmp"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def file_manifest(root: str | os.PathLike, names: Iterable[str]) -> dict[str, dict]:
    """Size and SHA-256 of every file under the entries ``names`` of ``root`` (files or dirs),
    by path relative to ``root``."""
    root = Path(root)
    files = [f for name in names for f in ([root / name] if (root / name).is_file() else sorted((root / name).rglob("*")))]
    manifest = {}
    for f in files:
        if f.is_file():
            digest = hashlib.sha256()
            with open(f, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            manifest[str(f.relative_to(root))] = {"bytes": f.stat().st_size, "sha256": digest.hexdigest()}
    return manifest


def manifest_mismatch(root: str | os.PathLike, manifest: dict[str, dict]) -> str | None:
    """The first file of ``manifest`` that is missing or differs under ``root`` (None: all match)."""
    root = Path(root)
    for name, expected in manifest.items():
        path = root / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"] or file_manifest(root, [name])[name] != expected:
            return f"{path} differs from what was written"
    return None


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# What ``save_to_disk`` of Hugging Face ``datasets`` leaves: a Dataset dir holds both of the first
# two files; a DatasetDict dir holds the third and one Dataset dir per split.
HF_DATASET_FILES = ("state.json", "dataset_info.json")
HF_DATASET_DICT_FILE = "dataset_dict.json"
ROW_FILE_SUFFIXES = (".jsonl", ".parquet")
# ``coinfluence data`` creates this first and removes it last, so a dir a killed run left is told
# apart from hand-made split files.
UNFINISHED_DATA = ".unfinished"


def hf_datasets():
    """The ``datasets`` package, imported on first use (an optional extra)."""
    from .errors import UserError

    try:
        import datasets
    except ImportError:
        raise UserError("saved Hugging Face datasets need the datasets package: pip install 'coinfluence[hf]'") from None
    return datasets


def is_saved_dataset(path: str | os.PathLike) -> bool:
    return all((Path(path) / name).is_file() for name in HF_DATASET_FILES)


def is_saved_dataset_dict(path: str | os.PathLike) -> bool:
    return (Path(path) / HF_DATASET_DICT_FILE).is_file()


def data_splits(path: str | os.PathLike) -> dict[str, Path]:
    """The splits a data source holds, by name, each as a path :func:`read_rows` reads: a JSONL or
    Parquet file is one split named by its stem; a saved ``Dataset`` dir one split named by the
    dir; a saved ``DatasetDict`` dir its splits; any other dir its ``SPLIT.jsonl`` /
    ``SPLIT.parquet`` files (JSONL first where both exist). UserError when there is nothing."""
    from .errors import UserError

    path = Path(path)
    if path.is_file():
        return {path.stem: path}
    if not path.is_dir():
        raise UserError(f"data not found: {path}")
    if (path / UNFINISHED_DATA).exists():
        raise UserError(f"{path} is data that `coinfluence data` did not finish (it was stopped); rerun it with --overwrite")
    if is_saved_dataset(path):
        return {path.name: path}
    if is_saved_dataset_dict(path):
        return {split: path / split for split in read_json(path / HF_DATASET_DICT_FILE).get("splits", [])}
    found: dict[str, Path] = {}
    for suffix in reversed(ROW_FILE_SUFFIXES):
        found.update({f.stem: f for f in sorted(path.glob(f"*{suffix}"))})
    if not found:
        raise UserError(f"{path} holds no data: no .jsonl or .parquet split files and no saved Hugging Face dataset")
    return found


def is_one_split(path: str | os.PathLike) -> bool:
    """A data source that is a single split (a row file or a saved Dataset dir), not a set of splits."""
    return Path(path).is_file() or is_saved_dataset(path)


def read_rows(path: str | os.PathLike, required: tuple[str, ...] = ("prompt",)) -> list[dict]:
    """Rows of a JSONL or Parquet file or of a saved ``datasets`` dir (a ``Dataset``, or a
    ``DatasetDict`` of one split), each with the ``required`` fields; UserError otherwise."""
    from .errors import UserError

    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    if path.is_dir() and not is_saved_dataset(path):
        splits = data_splits(path) if is_saved_dataset_dict(path) else {}
        if len(splits) != 1:
            hint = f"; pass one split of it, e.g. {next(iter(splits.values()))}" if splits else ""
            raise UserError(f"{path} is not one split of rows (a .jsonl/.parquet file or a saved Dataset){hint}")
        path = next(iter(splits.values()))
    try:
        if path.is_dir():
            rows = hf_datasets().load_from_disk(str(path)).to_list()
        elif path.suffix == ".parquet":
            import pandas as pd

            rows = pd.read_parquet(path).to_dict("records")
        else:
            rows = read_jsonl(path)
    except UserError:
        raise
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if not rows:
        raise UserError(f"{path} holds no rows")
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict) or any(k not in r for k in required)), None)
    if bad is not None:
        raise UserError(f"{path}: row {bad + 1} lacks one of the fields {', '.join(required)}")
    return rows


def write_dataset_dict(out_dir: str | os.PathLike, splits: dict[str, list[dict]]) -> None:
    """Save ``splits`` as a Hugging Face ``DatasetDict`` in ``out_dir`` (what ``save_to_disk``
    writes, so ``datasets.load_from_disk(out_dir)`` loads it): one Dataset dir per split, each
    swapped into place when complete, then the list of splits."""
    from .errors import UserError

    datasets = hf_datasets()
    out_dir = Path(out_dir)
    for split in splits:
        if (out_dir / split).exists() and not is_saved_dataset(out_dir / split):
            raise UserError(f"{out_dir / split} exists and is not a saved dataset; choose another --out")
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one bar per split would drown the command's own output
    try:
        for split, rows in splits.items():
            with atomic_dir(out_dir / split) as tmp:
                datasets.Dataset.from_list(list(rows)).save_to_disk(str(tmp))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    write_json(out_dir / HF_DATASET_DICT_FILE, {"splits": list(splits)})
