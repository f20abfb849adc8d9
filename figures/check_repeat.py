"""Does a unit's training repeat? Rerun its first steps and compare with its committed metrics.

    python figures/check_repeat.py figures/results/bridge-s0 --sft-steps 300 [--threads N] [--out DIR]

Runs the unit's recorded ``data`` and ``train`` commands (unit.json) into a scratch run dir,
stops training once SFT has logged step ``--sft-steps``, and compares every logged number that
does not measure time (loss, grad_norm, lr, epoch, token counts, validation accuracies) with the
unit's metrics.jsonl, row by row. Prints the first row that differs, or that all compared rows are
equal to the last bit. ``--threads`` replaces the recorded thread count, to see whether the
thread count alone breaks the repeat. The learning-rate schedule is the unit's own: training is
stopped, not shortened.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coinfluence.io import read_json

ROOT = Path(__file__).resolve().parent.parent
# Logged keys that measure time or speed, so differ between any two runs.
TIMING_KEYS = {"time", "tokens_per_second", "step_time", "sampling_time", "seconds"}


def comparable(row: dict) -> dict:
    """A metrics row without its timing keys."""
    return {k: v for k, v in row.items() if k not in TIMING_KEYS and not k.endswith("_time")}


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
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def train_until(args: list[str], metrics: Path, sft_steps: int, poll_s: float = 0.5) -> list[dict]:
    """Run ``coinfluence ARGS`` until SFT has logged step ``sft_steps`` (or it exits); its rows."""
    proc = subprocess.Popen([sys.executable, "-m", "coinfluence_cli.main", *args], cwd=ROOT)
    try:
        while proc.poll() is None:
            rows = read_rows(metrics)
            if any(r.get("stage") != "sft" or r.get("step", 0) >= sft_steps for r in rows):
                break
            time.sleep(poll_s)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    if proc.returncode not in (0, -15):
        sys.exit(f"error: the rerun exited with code {proc.returncode}")
    return [r for r in read_rows(metrics) if r.get("stage") == "sft" and r.get("step", 0) <= sft_steps]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("unit", type=Path, help="a unit's results dir (with unit.json and metrics.jsonl)")
    p.add_argument("--sft-steps", type=int, default=300, help="stop once SFT has logged this step")
    p.add_argument("--threads", type=int, default=None, help="thread count of the rerun (default: the unit's)")
    p.add_argument("--out", type=Path, default=None, help="scratch run dir, must not exist (default: a temp dir)")
    a = p.parse_args(argv)
    if not (a.unit / "unit.json").is_file() or not (a.unit / "metrics.jsonl").is_file():
        sys.exit(f"error: {a.unit} is not a unit's results dir (needs unit.json and metrics.jsonl)")
    if a.sft_steps < 1 or (a.threads is not None and a.threads < 1):
        sys.exit("error: --sft-steps and --threads must be positive")
    if a.out is not None and a.out.exists():
        sys.exit(f"error: --out {a.out} exists; give a new dir")
    unit = read_json(a.unit / "unit.json")
    data_cmd, train_cmd = (next(c for c in unit["commands"] if subcommand(c) == word) for word in ("data", "train"))
    out = a.out or Path(tempfile.mkdtemp(prefix="repeat-")) / "run"
    out = out.resolve()
    coinfluence_args = [retarget(c, unit["run"], str(out), a.threads) for c in (data_cmd, train_cmd)]
    subprocess.run([sys.executable, "-m", "coinfluence_cli.main", *coinfluence_args[0]], cwd=ROOT, check=True)
    rerun = train_until(coinfluence_args[1], out / "metrics.jsonl", a.sft_steps)
    recorded = [r for r in read_rows(a.unit / "metrics.jsonl") if r.get("stage") == "sft" and r.get("step", 0) <= a.sft_steps]
    diff = first_difference(recorded, rerun)
    threads = a.threads if a.threads is not None else unit["machine"]["threads"]
    print(f"{a.unit.name}: {len(rerun)} SFT rows rerun at {threads} thread(s) (recorded at {unit['machine']['threads']}, "
          f"on {unit['machine']['cpu']}), run dir {out}")
    if not rerun:
        print("nothing to compare: the rerun logged no SFT row")
        return 1
    if diff is None:
        print(f"repeat: every compared value is equal, up to SFT step {rerun[-1]['step']}")
        return 0
    print(f"differs first at {diff['stage']} step {diff['step']}, {diff['key']}: recorded {diff['recorded']!r}, rerun {diff['rerun']!r}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
