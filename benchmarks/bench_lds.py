"""Does ΔJ predict real training? The validation table and the LDS on one checkpoint.

Runs, at ``--threads 1``:

1. ``coinfluence analyze --validate K --precondition adam``: per informative train query, a small
   SGD step (first order of the derivative) and the GRPO trainer's own step (AdamW, lr, clipping,
   micro-batching) against ``lr·ΔJ``, plain and Adam-aware;
2. ``coinfluence lds`` at ``--steps 1`` and ``--steps K``: Spearman over random half-subsets of a
   pool of training queries between the observed change of the target objective after real GRPO
   steps and the summed predicted ΔJ, plain vs Adam-aware, with bootstrap intervals.

Writes ``lds.csv`` and ``lds.md`` beside this file (the outputs of each command go to ``--work``).

    .venv/bin/python benchmarks/bench_lds.py --ckpt RUN/sft --data RUN/data --work /tmp/lds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import write_csv  # noqa: E402

COINFLUENCE = [sys.executable, "-m", "coinfluence_cli.main", "--threads", "1"]


def run(args: list[str]) -> float:
    started = time.perf_counter()
    print("$ coinfluence --threads 1 " + " ".join(args), flush=True)
    subprocess.run(COINFLUENCE + args, check=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True, help="a run's data dir (rl_train and val_id splits)")
    ap.add_argument("--work", required=True, help="where the commands write their outputs")
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--validate", type=int, default=4)
    ap.add_argument("--pool", type=int, default=12)
    ap.add_argument("--subsets", type=int, default=8)
    ap.add_argument("--targets-n", type=int, default=4)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 3])
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    common = ["--ckpt", args.ckpt, "--train", str(data / "rl_train.jsonl"), "--targets", str(data / "val_id.jsonl"),
              "--num-generations", str(args.num_generations), "--targets-n", str(args.targets_n)]
    rows = []
    seconds = run(["analyze", *common, "--queries", str(args.pool), "--precondition", "adam", "--no-kernel",
                   "--validate", str(args.validate), "--out", str(work / "validate"), "--quiet"])
    v = json.loads((work / "validate" / "summary.json").read_text())["validation"]
    for r in v["trainer_step"]["rows"]:
        rows.append({"test": "trainer step", "query": r["query"], "lr": r["lr"], "observed": r["observed"],
                     "predicted_plain": r["predicted_plain"], "predicted_adam": r["predicted_adam"], "seconds": seconds})
    for q, o, p in zip(v["queries"], v["dJ_observed"], v["dJ_predicted"]):
        rows.append({"test": "SGD small step (E[r], importance-weighted)", "query": q, "observed": o, "predicted_plain": p})
    for k in args.steps:
        out = work / f"lds-k{k}"
        seconds = run(["lds", *common, "--pool", str(args.pool), "--subsets", str(args.subsets), "--steps", str(k),
                       "--out", str(out), "--quiet"])
        lds = json.loads((out / "summary.json").read_text())["lds"]
        for kind in ("plain", "adam"):
            rows.append({"test": f"LDS k={k}", "kind": kind, "spearman": lds[kind]["spearman"],
                         "interval_lo": lds[kind]["interval_95"][0], "interval_hi": lds[kind]["interval_95"][1],
                         "seconds": seconds})
    fields = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    write_csv(HERE / "lds.csv", fields, rows)
    print((HERE / "lds.csv").read_text())


if __name__ == "__main__":
    main()
