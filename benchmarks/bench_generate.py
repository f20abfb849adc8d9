"""Time the generation of 10,000 `mini` problems (DAG, question, solution, checker).

    python benchmarks/bench_generate.py [--n 10000] [--repeats 3]

Prints a table and writes benchmarks/generate.csv. Rates are problems per second, the
median of the repeats; the checker row re-reads every generated row.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from coinfluence.tasks.bridge import behaviour_preset
from coinfluence.tasks.data import DataConfig, make_dataset
from coinfluence.tasks.igsm import PRESETS, check_steps, generate, render_question, render_solution

sys.path.insert(0, str(Path(__file__).parent))
from machine import write_csv  # noqa: E402


def time_it(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n, cfg = args.n, PRESETS["mini"]

    def dags():
        for i in range(n):
            rng = random.Random(i)
            generate(rng, cfg, rng.randint(*cfg.op_id))

    def full(behaviours):
        def run():
            for i in range(n):
                rng = random.Random(i)
                p = generate(rng, cfg, rng.randint(*cfg.op_id))
                render_question(p, rng)
                render_solution(p, behaviour_preset(behaviours), random.Random(i), random.Random(-i))
        return run

    rows = make_dataset(DataConfig(sft_size=n, rl_size=1, eval_size=1))["sft"]

    def check():
        for r in rows:
            check_steps(r["prompt"], r["completion"])

    results = [
        ("DAG only", time_it(dags, args.repeats)),
        ("DAG + question + vanilla solution", time_it(full("none"), args.repeats)),
        ("DAG + question + BRIDGE solution", time_it(full("both"), args.repeats)),
        ("make_dataset sft split (dedupe, meta)", time_it(lambda: make_dataset(DataConfig(sft_size=n, rl_size=1, eval_size=1)), args.repeats)),
        ("step checker over the sft split", time_it(check, args.repeats)),
    ]
    machine = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    print(f"{n} mini problems, median of {args.repeats} ({machine})")
    print(f"{'what':42} {'seconds':>8} {'problems/s':>11}")
    out = Path(__file__).with_name("generate.csv")
    for name, sec in results:
        print(f"{name:42} {sec:8.2f} {n / sec:11.0f}")
    rows = [{"what": name, "n": n, "seconds": round(sec, 3), "problems_per_second": round(n / sec)} for name, sec in results]
    write_csv(out, list(rows[0]), rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
