"""Run the study's missing units in parallel lanes: each lane runs one unit at a time, at one thread.

    python figures/run_lanes.py --rl progress --variants question-aug answer-aug --seeds 0 1 2 3 4
    python figures/run_lanes.py --variants vanilla bridge --seeds 5 6 --lanes 2 --dry-run
    python figures/run_lanes.py --rl progress --variants question-aug answer-aug --status

A unit whose results exist (figures/results[-rl-NAME]/VARIANT-sSEED) is skipped. The others queue
seed by seed, so that the paired comparisons fill up evenly, and a lane that comes free takes
the next: ``python figures/run_unit.py VARIANT SEED [--rl NAME]``, whose steps resume where a
killed run stopped. Lanes share the machine's cores, so run no more lanes than cores; a unit
that another process is running is refused (run_unit.py locks it) and counts as failed.
Each unit's output is appended to runs/figures[-rl-NAME]/lanes/VARIANT-sSEED.log; this prints a
line as each unit starts and ends, and exits non-zero if any unit failed. ``--status`` says
where each unit stands (landed; running or stopped, at which training step and pace; or not
started) and runs nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run_unit.py beside this file

from run_unit import RESULTS, RL_SETTINGS, RUNS, parse_variant, rl_roots, unit_name, unit_running  # noqa: E402

from coinfluence.io import read_json, read_jsonl  # noqa: E402

RUN_UNIT = Path(__file__).resolve().parent / "run_unit.py"


def pending_units(variants: list[str], seeds: list[int], results_root: Path) -> list[tuple[str, int]]:
    """The (variant, seed) units without results under ``results_root``, seed by seed."""
    return [(v, s) for s in seeds for v in variants if not (results_root / unit_name(v, s)).is_dir()]


def unit_command(variant: str, seed: int, rl: str | None) -> list[str]:
    return [sys.executable, str(RUN_UNIT), variant, str(seed), *(["--rl", rl] if rl else [])]


def training_progress(run: Path, stage: str) -> tuple[int, int, float] | None:
    """(last logged step, steps configured, seconds a step) of ``stage`` ("sft" or "grpo") in
    ``run``; the pace is the median over the last ten logged intervals, so the gap of a kill and
    resume does not count. None where the stage has not logged a step."""
    metrics, config = run / "metrics.jsonl", run / "config.json"
    if not metrics.exists() or not config.exists():
        return None
    rows = [r for r in read_jsonl(metrics, torn_tail_ok=True) if r.get("stage") == stage and "time" in r and "step" in r]
    total = read_json(config).get(stage, {}).get("max_steps")
    if not rows or not total:
        return None
    recent = rows[-11:]
    paces = [(b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(recent, recent[1:]) if b["step"] > a["step"]]
    return int(rows[-1]["step"]), int(total), statistics.median(paces) if paces else float("nan")


def hours_minutes(seconds: float) -> str:
    """``"H h MM min"``, rounded to the minute ("an unknown time" for NaN)."""
    if seconds != seconds:
        return "an unknown time"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def unit_status(variant: str, seed: int, runs_root: Path, results_root: Path, sft_root: Path) -> str:
    """Where a unit stands: landed; running or stopped (another process holds its lock or not), at
    which training step and pace; or not started. An RL setting's unit trains GRPO in
    ``runs_root`` from an SFT model built in ``sft_root``."""
    name = unit_name(variant, seed)
    if (results_root / name).is_dir():
        return f"{name}: landed"
    state = "running" if unit_running(runs_root / name) else "stopped"
    # an RL setting's own GRPO, else the SFT model's build; never the study unit's GRPO in sft_root
    for run, stage in ((runs_root / name, "grpo"), (runs_root / name, "sft"), (sft_root / name, "sft")):
        progress = training_progress(run, stage)
        if progress:
            step, total, pace = progress
            return (f"{name}: {state} at {stage.upper()} step {step}/{total}, {pace:.1f} s a step lately, about "
                    f"{hours_minutes((total - step) * pace)} of {stage.upper()} to go")
    return f"{name}: running, no training step logged yet" if state == "running" else f"{name}: not started"


def run_lanes(units: list[tuple[str, int]], lanes: int, command_of, log_dir: Path) -> dict[str, int]:
    """Run ``command_of(variant, seed)`` for every unit, at most ``lanes`` at once, in order;
    returns each unit's exit status. A unit's output is appended to ``log_dir/UNIT.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)

    def run(unit: tuple[str, int]) -> int:
        name, command, started = unit_name(*unit), command_of(*unit), time.monotonic()
        print(f"{time.strftime('%H:%M:%S')} start {name}", flush=True)
        with open(log_dir / f"{name}.log", "a") as log:
            log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
            log.flush()
            status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"{time.strftime('%H:%M:%S')} {'done' if status == 0 else f'FAILED (exit {status})'} {name} "
              f"after {(time.monotonic() - started) / 60:.0f} min", flush=True)
        return status

    with ThreadPoolExecutor(max_workers=lanes) as pool:
        return dict(zip((unit_name(*u) for u in units), pool.map(run, units)))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the study's missing units in parallel lanes (one unit per lane, one thread each).")
    parser.add_argument("--variants", nargs="+", required=True, help="as run_unit.py takes them (vanilla, bridge, question-aug, ...)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="seeds of each variant (default: %(default)s)")
    parser.add_argument("--rl", choices=sorted(RL_SETTINGS), help="units of this RL setting (run_unit.py --rl NAME)")
    parser.add_argument("--lanes", type=int, default=min(2, os.cpu_count() or 1),
                        help="units run at once, at most the machine's cores (default: 2, or 1 on one core)")
    parser.add_argument("--dry-run", action="store_true", help="print the units that would run, run none")
    parser.add_argument("--status", action="store_true", help="say where each unit stands, run none")
    args = parser.parse_args()
    for variant in args.variants:
        try:
            parse_variant(variant)
        except ValueError as err:
            parser.error(str(err))
    if not 1 <= args.lanes <= (os.cpu_count() or 1):
        parser.error(f"--lanes must be between 1 and the number of this machine's cores ({os.cpu_count()})")
    runs_root, results_root = rl_roots(args.rl) if args.rl else (RUNS, RESULTS)
    if args.status:
        for seed in args.seeds:
            for variant in args.variants:
                print(unit_status(variant, seed, runs_root, results_root, RUNS))
        return
    units = pending_units(args.variants, args.seeds, results_root)
    print(f"{len(units)} unit(s) to run in {min(args.lanes, len(units))} lane(s): "
          f"{', '.join(unit_name(*u) for u in units) or 'none'}", flush=True)
    if args.dry_run or not units:
        return
    status = run_lanes(units, args.lanes, lambda v, s: unit_command(v, s, args.rl), runs_root / "lanes")
    failed = [name for name, code in status.items() if code]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}; rerun to resume them")


if __name__ == "__main__":
    main()
