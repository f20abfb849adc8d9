"""Atomic file writes and JSONL helpers shared by every stage.

Every file is written under a temporary name in the same directory and renamed into place,
so a killed run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON line (metric logs); a line is written with one call and flushed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=_jsonable) + "\n")
        f.flush()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; swap it into place if the block succeeds.

    An existing ``path`` is replaced only after the new directory is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700 directories
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


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
