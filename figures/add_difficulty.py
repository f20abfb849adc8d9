"""Add eval's accuracy by difficulty (``steps/K/...``: the queries grouped by the steps a solution
needs, see ``coinfluence.tasks.score.difficulty_summary``) to units tested before eval
wrote it, from the unit's own scored samples (RUN/eval/CHECKPOINT.jsonl). Only a unit whose run
dir is still on this machine has them; keys its eval.json already has are left as they are.

    python figures/add_difficulty.py runs/figures-rl-progress/bridge-s3 figures/results-rl-progress/bridge-s3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coinfluence.io import read_json, read_jsonl, write_json
from coinfluence.run import Run
from coinfluence.tasks.registry import get_task
from coinfluence.tasks.score import difficulty_summary


def difficulty_of_run(run_dir: Path) -> dict[str, dict[str, dict]]:
    """``{checkpoint: {split: steps/K/... numbers}}`` from the run's scored samples, for every
    checkpoint of its eval.json whose samples are here; exits with one line where the samples do
    not match what eval.json counted."""
    run = Run(run_dir)
    task = get_task(read_json(run_dir / "data" / "data_config.json")["data"]["task"])
    found = {}
    for checkpoint, splits in read_json(run.eval_json)["checkpoints"].items():
        path = run.eval_records(checkpoint)
        if not path.exists():
            continue
        records = read_jsonl(path)
        for split, saved in splits.items():
            rows = [r for r in records if r["split"] == split]
            if len(rows) != saved["num_rows"] * saved["n"]:
                sys.exit(f"error: {path} has {len(rows)} {split} samples, eval.json counts {saved['num_rows']} x {saved['n']}")
            found.setdefault(checkpoint, {})[split] = difficulty_summary(rows, saved["n"], task.needed_steps)
    return found


def add_missing(eval_json: Path, found: dict[str, dict[str, dict]]) -> int:
    """Write into ``eval_json`` the numbers it lacks (atomically); returns how many were added."""
    saved = read_json(eval_json)
    added = 0
    for checkpoint, splits in found.items():
        for split, numbers in splits.items():
            entry = saved["checkpoints"].get(checkpoint, {}).get(split)
            for key, value in numbers.items() if entry is not None else ():
                if key not in entry:
                    entry[key], added = value, added + 1
    if added:
        write_json(eval_json, saved)
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description="Add eval's accuracy by difficulty to units tested before eval wrote it.")
    parser.add_argument("run", type=Path, help="the unit's run dir (with eval/*.jsonl)")
    parser.add_argument("results", type=Path, nargs="?", help="its committed results dir, updated the same way")
    args = parser.parse_args()
    for path in (args.run, args.results):
        if path is not None and not Run(path).eval_json.exists():
            sys.exit(f"error: {path} has no eval.json")
    found = difficulty_of_run(args.run)
    for path in (args.run, args.results):
        if path is not None:
            print(f"{Run(path).eval_json}: {add_missing(Run(path).eval_json, found)} numbers added")


if __name__ == "__main__":
    main()
