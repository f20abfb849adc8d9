"""Does a unit's training repeat? Rerun its first steps and compare with its committed metrics.

    python figures/check_repeat.py figures/results/bridge-s0 --sft-steps 300 [--threads N] [--out DIR]
    python figures/check_repeat.py figures/results/bridge-s0 --grpo-steps 20   # GRPO from the unit's SFT model

Runs the unit's recorded ``data`` and ``train`` commands (unit.json) into a scratch run dir,
stops training once SFT has logged step ``--sft-steps``, and compares every logged number that
does not measure time (loss, grad_norm, lr, epoch, token counts, validation accuracies) with the
unit's metrics.jsonl, row by row. Prints the first row that differs, or that all compared rows are
equal to the last bit. ``--threads`` replaces the recorded thread count, to see whether the
thread count alone breaks the repeat. The learning-rate schedule is the unit's own: training is
stopped, not shortened. With ``--grpo-steps N`` the rerun is GRPO alone, from the SFT checkpoint in
the unit's run dir (which must still be on this machine), compared up to GRPO step N: sampling,
rewards and updates, given the same SFT weights.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coinfluence.io import read_json, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
# Logged keys that measure time or speed, so differ between any two runs.
TIMING_KEYS = {"time", "tokens_per_second", "step_time", "seconds"}


def comparable(row: dict) -> dict:
    """A metrics row without its timing keys."""
    return {k: v for k, v in row.items() if k not in TIMING_KEYS and not k.startswith("time/")}


def first_difference(recorded: list[dict], rerun: list[dict]) -> dict | None:
    """The first (stage, step) row of ``rerun`` whose comparable values differ from ``recorded``'s
    row of the same (stage, step), as {stage, step, key, recorded, rerun}; None if all are equal.
    A key logged in only one of the two rows counts as a difference."""
    by_step = {(r.get("stage"), r.get("step")): comparable(r) for r in recorded}
    for row in rerun:
        key = (row.get("stage"), row.get("step"))
        if key not in by_step:
            continue
        a, b = by_step[key], comparable(row)
        for name in sorted(a.keys() | b.keys()):
            if a.get(name) != b.get(name):
                return {"stage": key[0], "step": key[1], "key": name, "recorded": a.get(name), "rerun": b.get(name)}
    return None


def subcommand(command: str) -> str:
    """The subcommand of a recorded ``coinfluence [--root-option VALUE ...] SUBCOMMAND ...``."""
    args = shlex.split(command)[1:]
    while args and args[0].startswith("--"):
        args = args[2:]  # every root option takes a value
    return args[0] if args else ""


def retarget(command: str, old_run: str, new_run: str, threads: int | None) -> list[str]:
    """A recorded ``coinfluence ...`` command as arguments, writing to ``new_run`` instead of
    ``old_run`` and, if given, at ``threads`` threads."""
    args = shlex.split(command)[1:]
    args = [a.replace(old_run, new_run, 1) if a == old_run or a.startswith(old_run + "/") else a for a in args]
    if threads is not None and "--threads" in args:
        args[args.index("--threads") + 1] = str(threads)
    return args


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl that may still be written (a torn last line is left out)."""
    return read_jsonl(path, torn_tail_ok=True) if path.exists() else []


def within(rows: list[dict], stage: str, steps: int) -> list[dict]:
    return [r for r in rows if r.get("stage") == stage and r.get("step", 0) <= steps]


def train_until(args: list[str], metrics: Path, stage: str, steps: int, poll_s: float = 0.5) -> list[dict]:
    """Run ``coinfluence ARGS`` until ``stage`` has logged step ``steps`` or training moved past
    that stage (or it exits); the rows of ``stage`` up to ``steps``."""
    proc = subprocess.Popen([sys.executable, "-m", "coinfluence_cli.main", *args], cwd=ROOT)
    try:
        while proc.poll() is None:
            rows = read_rows(metrics)
            if any(r.get("stage") == stage and r.get("step", 0) >= steps for r in rows) or \
                    (stage == "sft" and any(r.get("stage") != "sft" for r in rows)):
                break
            time.sleep(poll_s)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    if proc.returncode not in (0, -15):
        sys.exit(f"error: the rerun exited with code {proc.returncode}")
    return within(read_rows(metrics), stage, steps)


def code_version() -> str:
    """The commit of the code that reran, with ``-dirty`` for uncommitted changes (or "unknown")."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("unit", type=Path, help="a unit's results dir (with unit.json and metrics.jsonl)")
    p.add_argument("--sft-steps", type=int, default=300, help="stop once SFT has logged this step")
    p.add_argument("--grpo-steps", type=int, default=0,
                   help="instead, rerun GRPO from the unit's SFT checkpoint and stop once it has logged this step")
    p.add_argument("--threads", type=int, default=None, help="thread count of the rerun (default: the unit's)")
    p.add_argument("--out", type=Path, default=None, help="scratch run dir, must not exist (default: a temp dir)")
    a = p.parse_args(argv)
    if not (a.unit / "unit.json").is_file() or not (a.unit / "metrics.jsonl").is_file():
        sys.exit(f"error: {a.unit} is not a unit's results dir (needs unit.json and metrics.jsonl)")
    if a.sft_steps < 1 or a.grpo_steps < 0 or (a.threads is not None and a.threads < 1):
        sys.exit("error: --sft-steps and --threads must be positive, --grpo-steps >= 0")
    if a.out is not None and a.out.exists():
        sys.exit(f"error: --out {a.out} exists; give a new dir")
    a.record = read_json(a.unit / "unit.json")
    a.sft = ROOT / a.record["run"] / "sft"
    if a.grpo_steps and not (a.sft / "config.json").is_file():
        sys.exit(f"error: --grpo-steps needs the unit's SFT checkpoint, and {a.sft} is not here")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    unit = a.record
    stage, steps = ("grpo", a.grpo_steps) if a.grpo_steps else ("sft", a.sft_steps)
    data_cmd, train_cmd = (next(c for c in unit["commands"] if subcommand(c) == word) for word in ("data", "train"))
    out = (a.out or Path(tempfile.mkdtemp(prefix="repeat-")) / "run").resolve()
    data_args, train_args = (retarget(c, unit["run"], str(out), a.threads) for c in (data_cmd, train_cmd))
    if stage == "grpo":
        train_args += ["--stage", "grpo", "--from-sft", str(a.sft)]
    if subprocess.run([sys.executable, "-m", "coinfluence_cli.main", *data_args], cwd=ROOT).returncode:
        sys.exit(f"error: the unit's data command failed: coinfluence {shlex.join(data_args)}")
    rerun = train_until(train_args, out / "metrics.jsonl", stage, steps)
    diff = first_difference(within(read_rows(a.unit / "metrics.jsonl"), stage, steps), rerun)
    threads = a.threads if a.threads is not None else unit["machine"]["threads"]
    print(f"{a.unit.name}: {len(rerun)} {stage.upper()} rows rerun at {threads} thread(s) with code {code_version()} "
          f"(recorded at {unit['machine']['threads']}, on {unit['machine']['cpu']}), run dir {out}")
    if not rerun:
        print(f"nothing to compare: the rerun logged no {stage.upper()} row")
        return 1
    if diff is None:
        print(f"repeat: every compared value is equal, up to {stage.upper()} step {rerun[-1]['step']}")
        return 0
    print(f"differs first at {diff['stage']} step {diff['step']}, {diff['key']}: recorded {diff['recorded']!r}, rerun {diff['rerun']!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
