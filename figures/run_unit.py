"""One unit of the figure set: one (variant, seed) run of the real pipeline plus its analysis.

    python figures/run_unit.py VARIANT SEED

1. train: ``coinfluence train --behaviours B --out runs/figures/VARIANT-sSEED --seed SEED --resume``
   on the `mini` default (data, SFT, GRPO, greedy test accuracy of sft and grpo/final). Variants
   whose data needs options that ``train`` does not have (augmentation, injection probability)
   first write the data with ``coinfluence data --out RUN/data ...`` and train with ``--data RUN/data``.
2. analyse: ``coinfluence analyze --run RUN --all-checkpoints --no-kernel``: the SFT checkpoint,
   every GRPO step checkpoint (the last one holds the final weights) and timeseries.csv. ΔJ and
   co-influence come from the aggregated path either way; ``--no-kernel`` only skips the
   per-rollout K⁺/K⁻ columns, which no figure uses, and saves over half the analysis time.
3. sampled evaluation: ``coinfluence eval --splits test_id --n 8 --temperature 1 --limit 100``
   of the SFT model and of grpo/final (mean@8, pass@8, and how often the completions use the
   injected behaviours, and how accurate those completions are), saved in eval.json beside the
   greedy results under ``sft@n8-t1`` and ``grpo/final@n8-t1``.
4. copy the unit's small result files (config, metrics, eval, data options, summaries,
   queries.parquet, timeseries; each under 200 KB, never checkpoints) to
   figures/results/VARIANT-sSEED/, which appears only when complete. A unit whose results exist
   is skipped; a killed unit resumes (``train --resume``). ``--refresh`` runs the steps that a
finished unit lacks (steps added after it was made) when its run dir is still here, and
recopies its results.

VARIANT is one of vanilla (behaviours none), bridge (both), explore, exploit, question-aug,
answer-aug (vanilla data with K sentence orders / solution orders of each SFT problem), with an
optional injection-probability suffix for the sweep: ``bridge-pe0.6`` (p_explore 0.6),
``exploit-px0.5`` (p_exploit 0.5), or both (``bridge-pe0.6-px0.5``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from coinfluence.io import atomic_dir, read_json, write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "figures" / "results"
RUNS = ROOT / "runs" / "figures"
BASES = {"vanilla": ("none", {}), "bridge": ("both", {}), "explore": ("explore", {}), "exploit": ("exploit", {}),
         "question-aug": ("none", {"question_aug": True}), "answer-aug": ("none", {"answer_aug": True})}
AUG_K = 4  # orders per SFT problem in the augmentation baselines
KEEP = ["config.json", "metrics.jsonl", "eval.json", "data/data_config.json", "analysis/timeseries.csv",
        "analysis/*/summary.json", "analysis/*/queries.parquet"]
MAX_BYTES = 200_000
SAMPLED_EVAL = ["--splits", "test_id", "--n", "8", "--temperature", "1", "--limit", "100"]
SAMPLED_NAME = "@n8-t1"  # the suffix `coinfluence eval` gives these results in eval.json
_VARIANT = re.compile(r"^(?P<base>[a-z-]+?)(?:-pe(?P<pe>[0-9.]+))?(?:-px(?P<px>[0-9.]+))?$")


def parse_variant(variant: str, aug_k: int = AUG_K) -> tuple[str, list[str]]:
    """(behaviours, options of ``coinfluence data``) of a variant name; ValueError if unknown."""
    m = _VARIANT.match(variant)
    if not m or m.group("base") not in BASES:
        raise ValueError(f"unknown variant {variant!r}; choose {', '.join(BASES)} (optionally -peX and/or -pxY)")
    behaviours, aug = BASES[m.group("base")]
    opts = []
    if aug.get("question_aug"):
        opts += ["--question-aug", str(aug_k)]
    if aug.get("answer_aug"):
        opts += ["--answer-aug", str(aug_k)]
    if m.group("pe"):
        opts += ["--p-explore", m.group("pe")]
    if m.group("px"):
        opts += ["--p-exploit", m.group("px")]
    return behaviours, opts


def unit_name(variant: str, seed: int) -> str:
    return f"{variant}-s{seed}"


def coinfluence(args: list[str]) -> float:
    """Run one ``coinfluence`` command of this interpreter's install; returns its wall time."""
    print("$ coinfluence " + shlex.join(args), flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "coinfluence_cli.main", *args], check=True, cwd=ROOT)
    return time.perf_counter() - started


def copy_results(run: Path, dest: Path, record: dict) -> list[str]:
    """Copy the small result files of ``run`` into ``dest`` (atomically, as one dir); returns
    the files left out for their size."""
    skipped = []
    with atomic_dir(dest) as tmp:
        for pattern in KEEP:
            for src in sorted(run.glob(pattern)):
                if src.stat().st_size > MAX_BYTES:
                    skipped.append(str(src.relative_to(run)))
                    continue
                target = tmp / src.relative_to(run)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
        write_json(tmp / "unit.json", {**record, "left_out_for_size": skipped})
    return skipped


def evaluated(run: Path, checkpoint: str) -> bool:
    path = ROOT / run / "eval.json"
    return path.exists() and checkpoint in read_json(path).get("checkpoints", {})


def run_unit(variant: str, seed: int, *, runs_root: Path = RUNS, results_root: Path = RESULTS, aug_k: int = AUG_K,
             extra_train: list[str] = (), extra_analyze: list[str] = (), extra_eval: list[str] = (),
             refresh: bool = False) -> Path:
    """Train, analyse, evaluate and copy one unit (see the module docstring); returns its results dir."""
    behaviours, data_opts = parse_variant(variant, aug_k)
    name = unit_name(variant, seed)
    dest = Path(results_root) / name
    run = Path(runs_root) / name
    if run.resolve().is_relative_to(ROOT):  # commands run in ROOT; keep the recorded paths short
        run = run.resolve().relative_to(ROOT)
    if dest.is_dir() and not refresh:
        print(f"skip {name}: {dest} exists", flush=True)
        return dest
    if dest.is_dir() and not (ROOT / run / "sft").is_dir():
        print(f"skip {name}: nothing to refresh from ({run} is gone)", flush=True)
        return dest
    seconds = {}
    commands = []
    if data_opts:
        data_cmd = ["data", "--out", str(run / "data"), "--behaviours", behaviours, "--seed", str(seed), *data_opts]
        train_cmd = ["train", "--data", str(run / "data"), "--out", str(run), "--seed", str(seed), "--resume", *extra_train]
        if not (ROOT / run / "data" / "data_config.json").exists():
            seconds["data"] = coinfluence(data_cmd)
        commands.append(data_cmd)
    else:
        train_cmd = ["train", "--behaviours", behaviours, "--out", str(run), "--seed", str(seed), "--resume", *extra_train]
    if not (evaluated(run, "grpo/final") and (ROOT / run / "grpo" / "final").is_dir()):
        seconds["train"] = coinfluence(train_cmd)
    analyze_cmd = ["analyze", "--run", str(run), "--all-checkpoints", "--no-kernel", "--seed", str(seed), "--quiet", *extra_analyze]
    if not (ROOT / run / "analysis" / "timeseries.csv").exists():
        seconds["analyze"] = coinfluence(analyze_cmd)
    commands += [train_cmd, analyze_cmd]
    for checkpoint in ("sft", "grpo/final"):
        eval_cmd = ["eval", "--ckpt", str(run / checkpoint), "--data", str(run / "data"), *SAMPLED_EVAL, "--seed", str(seed),
                    *extra_eval]
        if not evaluated(run, checkpoint + SAMPLED_NAME):
            seconds["sampled_eval"] = seconds.get("sampled_eval", 0.0) + coinfluence(eval_cmd)
        commands.append(eval_cmd)

    import torch

    old = read_json(dest / "unit.json") if (dest / "unit.json").exists() else {}
    record = {
        "variant": variant, "seed": seed, "run": str(run),
        "commands": ["coinfluence " + shlex.join(c) for c in commands],
        "seconds": {**old.get("seconds", {}), **{k: round(v, 1) for k, v in seconds.items()}},
        "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
        "finished": old.get("finished", time.strftime("%Y-%m-%d %H:%M:%S")),
        **({"refreshed": time.strftime("%Y-%m-%d %H:%M:%S")} if old else {}),
    }
    skipped = copy_results(ROOT / run, dest, record)
    for path in skipped:
        print(f"left out {path} (over {MAX_BYTES // 1000} KB)", flush=True)
    print(f"results: {dest}", flush=True)
    return dest


def add_hidden_options(parser: argparse.ArgumentParser) -> None:
    """Options for testing the scripts on a tiny configuration (not for the real figures)."""
    hide = argparse.SUPPRESS
    parser.add_argument("--extra-train-args", default="", help=hide)
    parser.add_argument("--extra-analyze-args", default="", help=hide)
    parser.add_argument("--extra-eval-args", default="", help=hide)
    parser.add_argument("--runs-root", type=Path, default=RUNS, help=hide)
    parser.add_argument("--results-root", type=Path, default=RESULTS, help=hide)


def main() -> None:
    parser = argparse.ArgumentParser(description="One (variant, seed) unit of the figure set: SFT + GRPO run, analysis, results copied.")
    parser.add_argument("variant", help=f"{', '.join(BASES)}, optionally with -peX / -pxY (injection probabilities)")
    parser.add_argument("seed", type=int)
    parser.add_argument("--aug-k", type=int, default=AUG_K, help="orders per SFT problem in question-aug/answer-aug")
    parser.add_argument("--refresh", action="store_true",
                        help="for a finished unit whose run dir is still here: run the steps it lacks and recopy its results")
    add_hidden_options(parser)
    args = parser.parse_args()
    try:
        parse_variant(args.variant)
    except ValueError as err:
        parser.error(str(err))
    try:
        run_unit(args.variant, args.seed, runs_root=args.runs_root, results_root=args.results_root, aug_k=args.aug_k,
                 extra_train=shlex.split(args.extra_train_args), extra_analyze=shlex.split(args.extra_analyze_args),
                 extra_eval=shlex.split(args.extra_eval_args), refresh=args.refresh)
    except subprocess.CalledProcessError as err:
        sys.exit(f"unit {unit_name(args.variant, args.seed)} failed: {shlex.join(map(str, err.cmd[2:]))} exited {err.returncode}")


if __name__ == "__main__":
    main()
