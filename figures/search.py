"""The search for the study's setting: every probe run, its options, and its validation curve.

    python figures/search.py [SEARCH_DIR]      # default: figures/search
    python figures/search.py --rows RUN PROBE CKPT CKPT...   # record which test_id rows each passes

A probe is one SFT (``search/sft-*``) or GRPO (``search/grpo-*``) run made while choosing the
setting; its small files (config.json, metrics.jsonl, eval.json, data_config.json, probe.json with
the command) are kept under figures/search/NAME/. This prints, per probe, the greedy validation
accuracy (answer / step-verified, ``val_id``) at each evaluated step, GRPO's training metrics over
10-step windows, and its test accuracy with the step checker's verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coinfluence.io import read_json, read_jsonl, write_json
from coinfluence.plots.claims import bootstrap_interval
from coinfluence.run import Run

ROOT = Path(__file__).resolve().parent


def curve(probe: Path) -> list[tuple[int, float, float | None]]:
    """``(stage step, answer accuracy, step-verified accuracy)`` at each validation, SFT then GRPO."""
    out = []
    metrics = Run(probe).metrics
    for row in read_jsonl(metrics) if metrics.exists() else []:
        for answer, step in (("val_accuracy", "val_step_accuracy"), ("val_id_accuracy", "val_id_step_accuracy")):
            if row.get(answer) is not None:
                out.append((row["stage"], row["step"], row[answer], row.get(step)))
    return out


TRAINING_KEYS = ("reward", "step_accuracy", "accuracy", "entropy", "frac_reward_zero_std")
WINDOW = 10  # GRPO steps per training mean
EVERY = 200  # a window ends at each multiple of this, and at the last step


def training_windows(probe: Path) -> list[tuple[int, int, dict]]:
    """``(first, last, means)``: GRPO training metrics averaged over steps 1–10, over the 10 steps
    ending at each multiple of ``EVERY``, and over the last 10 (the step-0 validation row excluded)."""
    metrics = Run(probe).metrics
    rows = [r for r in (read_jsonl(metrics) if metrics.exists() else []) if r["stage"] == "grpo" and r.get("reward") is not None]
    if not rows:
        return []
    last = max(r["step"] for r in rows)
    ends = sorted({WINDOW, *range(EVERY, last + 1, EVERY), last})
    out = []
    for end in ends:
        window = [r for r in rows if end - WINDOW < r["step"] <= end]
        means = {k: sum(r[k] for r in window) / len(window) for k in TRAINING_KEYS if all(k in r for r in window)}
        out.append((end - WINDOW + 1, end, means))
    return out


def verdict_shares(result: dict) -> str:
    """The step checker's verdicts of one evaluation, largest share first (% of rows)."""
    shares = sorted(((v, k.split("/", 1)[1]) for k, v in result.items() if k.startswith("verdict/")), reverse=True)
    return ", ".join(f"{name} {100 * v:.1f}" for v, name in shares)


ROWS_FILE = "step_verified_rows.json"  # per checkpoint, the test_id rows the step checker passes
ROWS_SPLIT = "test_id"


def record_rows(run: Path, checkpoints: list[str], probe: Path) -> dict:
    """PROBE/step_verified_rows.json from RUN/eval/NAME.jsonl (what ``eval`` wrote): the ids of the
    ``test_id`` rows each checkpoint gets step-verified, so two checkpoints can be compared row by row."""
    record = {}
    for ckpt in checkpoints:
        rows = [r for r in read_jsonl(Run(run).eval_records(ckpt)) if r["split"] == ROWS_SPLIT]
        record[ckpt] = {"rows": len(rows), "verified": sorted(r["id"] for r in rows if r["verdict"] == "correct")}
    write_json(probe / ROWS_FILE, record)
    return record


def paired_gains(record: dict) -> list[str]:
    """Each later checkpoint's step-verified gain over the one before it and over the first, paired by
    row: the mean and its 95% bootstrap interval over rows (points), and how many rows it gained and lost."""
    out = []
    names = list(record)
    pairs = list(zip(names, names[1:])) + [(names[0], later) for later in names[2:]]
    for before, after in pairs:
        a, b, n = set(record[before]["verified"]), set(record[after]["verified"]), record[after]["rows"]
        diffs = [1.0] * len(b - a) + [-1.0] * len(a - b) + [0.0] * (n - len(a ^ b))
        mean, lo, hi = (100 * v for v in bootstrap_interval(diffs))
        out.append(f"{after} - {before}: {mean:+.1f} [{lo:.1f}, {hi:.1f}] points over {n} rows "
                   f"({len(b - a)} rows gained, {len(a - b)} lost)")
    return out


def describe(probe: Path) -> str:
    info = json.loads((probe / "probe.json").read_text()) if (probe / "probe.json").exists() else {}
    lines = [f"## {probe.name}", info.get("what", ""), *(f"    $ {c}" for c in info.get("commands", []))]
    points = curve(probe)
    if points:
        lines.append("    " + "  ".join(f"{stage} {step}: {100 * a:.1f}/{'-' if s is None else f'{100 * s:.1f}'}"
                                          for stage, step, a, s in points))
    for first, last, means in training_windows(probe):
        lines.append(f"    training steps {first}-{last}: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    evals = Run(probe).eval_json
    saved = json.loads(evals.read_text()).get("checkpoints", {}) if evals.exists() else {}
    for ckpt, splits in saved.items():
        for split, r in splits.items():
            step = r.get("step_accuracy")
            lines.append(f"    {ckpt} {split}: answer {100 * r['accuracy']:.1f}%, step-verified "
                         f"{'-' if step is None else f'{100 * step:.1f}%'} ({r['num_rows']} rows)")
            if verdict_shares(r):
                lines.append(f"        step checker's verdicts (%): {verdict_shares(r)}")
    if (probe / ROWS_FILE).exists():
        lines += [f"    step-verified {ROWS_SPLIT}, {line}" for line in paired_gains(read_json(probe / ROWS_FILE))]
    return "\n".join(line for line in lines if line)


def main() -> None:
    parser = argparse.ArgumentParser(description="Print every probe of the setting's search.")
    parser.add_argument("search", nargs="?", type=Path, default=ROOT / "search")
    parser.add_argument("--rows", nargs="+", metavar=("RUN", "PROBE"),
                        help="RUN PROBE CKPT...: record in PROBE which test_id rows each checkpoint of RUN gets step-verified")
    args = parser.parse_args()
    if args.rows:
        run, probe, *checkpoints = map(str, args.rows)
        missing = [c for c in checkpoints if not Run(Path(run)).eval_records(c).is_file()]
        if len(checkpoints) < 2 or missing or not Path(probe).is_dir():
            parser.error(f"--rows takes RUN PROBE and two or more checkpoints with RUN/eval/NAME.jsonl (missing: {missing or '-'})")
        record_rows(Path(run), checkpoints, Path(probe))
        print("\n".join(paired_gains(read_json(Path(probe) / ROWS_FILE))))
        return
    probes = sorted(p for p in args.search.iterdir() if p.is_dir())
    if not probes:
        sys.exit(f"error: no probes under {args.search}")
    print("greedy val_id accuracy, answer/step-verified (%), at each validation step\n")
    for probe in probes:
        print(describe(probe), "\n")


if __name__ == "__main__":
    main()
