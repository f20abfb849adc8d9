"""The search for the study's setting: every probe run, its options, and its validation curve.

    python figures/search.py [SEARCH_DIR]      # default: figures/search

A probe is one SFT (``search/sft-*``) or GRPO (``search/grpo-*``) run made while choosing the
setting; its small files (config.json, metrics.jsonl, eval.json, data_config.json, probe.json with
the command) are kept under figures/search/NAME/. This prints, per probe, the greedy validation
accuracy (answer / step-verified, ``val_id``) at each evaluated step, and its test accuracy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from coinfluence.io import read_jsonl
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


def describe(probe: Path) -> str:
    info = json.loads((probe / "probe.json").read_text()) if (probe / "probe.json").exists() else {}
    lines = [f"## {probe.name}", info.get("what", ""), *(f"    $ {c}" for c in info.get("commands", []))]
    points = curve(probe)
    if points:
        lines.append("    " + "  ".join(f"{stage} {step}: {100 * a:.1f}/{'-' if s is None else f'{100 * s:.1f}'}"
                                          for stage, step, a, s in points))
    evals = Run(probe).eval_json
    saved = json.loads(evals.read_text()).get("checkpoints", {}) if evals.exists() else {}
    for ckpt, splits in saved.items():
        for split, r in splits.items():
            step = r.get("step_accuracy")
            lines.append(f"    {ckpt} {split}: answer {100 * r['accuracy']:.1f}%, step-verified "
                         f"{'-' if step is None else f'{100 * step:.1f}%'} ({r['num_rows']} rows)")
    return "\n".join(line for line in lines if line)


def main(search: Path) -> None:
    probes = sorted(p for p in search.iterdir() if p.is_dir())
    if not probes:
        sys.exit(f"error: no probes under {search}")
    print("greedy val_id accuracy, answer/step-verified (%), at each validation step\n")
    for probe in probes:
        print(describe(probe), "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "search")
