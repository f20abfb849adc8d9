"""``coinfluence lds``: does the summed predicted ΔJ of a set of training queries rank what real
GRPO training on that set does to the target objective? (The linear datamodeling score.)

From one checkpoint: a fixed pool of training queries and fixed target rollouts; ``M`` random
subsets of the pool, each of ``round(fraction·pool)`` queries; for each subset, ``k`` real steps
of the GRPO trainer (:func:`coinfluence.training.grpo.train_grpo`, every subset query in every
step, the same seeds otherwise; a GRPO checkpoint resumes with its saved optimizer and schedule,
any other starts a fresh optimizer, as GRPO after SFT does), then the observed change of the
target objective on the fixed target rollouts. The LDS is the Spearman correlation over subsets of
observed change and ``Σ_{q∈S} delta_J(q)``, for the plain and the Adam-aware ΔJ, with a
bootstrap interval over subsets.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from coinfluence.errors import UserError
from coinfluence.influence import features as feat
from coinfluence.influence.analyze import (
    AnalyzeOptions, adam_update_options, check_analysis_options, pick, read_answered_rows, resolve_inputs, resolve_options, sample_groups,
    trainer_config,
)
from coinfluence.influence.step import TARGET_OBJECTIVES, delta_J_aggregated
from coinfluence.influence.validate import grpo_resume_step, rollout_objective_terms, spearman, target_objective_change
from coinfluence.io import atomic_path, output_dir, write_json
from coinfluence.run import Run


@dataclass
class LDSOptions:
    ckpt: str
    train: str | None = None
    targets: str | None = None
    run: str | None = None
    pool: int = 16
    targets_n: int = 8
    subsets: int = 16
    fraction: float = 0.5
    steps: int = 1
    num_generations: int | None = None
    max_completion_length: int | None = None
    target_objective: str = "surrogate"
    bootstrap: int = 2000
    seed: int = 0
    out: str | None = None


def subset_members(pool: int, subsets: int, fraction: float, seed: int) -> list[list[int]]:
    """``subsets`` seeded random subsets of ``range(pool)``, each of ``round(fraction·pool)`` indices (sorted)."""
    size = max(1, round(fraction * pool))
    rng = random.Random(feat.stream_seed(seed, "lds", "subsets"))
    return [sorted(rng.sample(range(pool), size)) for _ in range(subsets)]


def train_subset(ckpt: Path, rows: list[dict], cfg, steps: int, work: Path, task=None):
    """The model after ``steps`` GRPO steps on ``rows`` (all of them every step) from ``ckpt``
    (``task``: whose checker grades a ``steps`` reward)."""
    from coinfluence.models.loading import load_model
    from coinfluence.training.checkpoint import quiet_hf_progress
    from coinfluence.training.grpo import step_checkpoints, train_grpo

    start = grpo_resume_step(ckpt)
    out_dir = Path(tempfile.mkdtemp(prefix="subset-", dir=work))
    if start:  # resume: the trainer reloads the saved optimizer and schedule from its own step dir
        shutil.copytree(ckpt, Run(out_dir).grpo_step(start))
    with quiet_hf_progress():
        model, tok = load_model(ckpt)
    train_grpo(replace(cfg, max_steps=start + steps), model, tok, rows, None, out_dir, resume=bool(start), progress=False,
               task=task)
    assert step_checkpoints(Run(out_dir).grpo)[-1][0] == start + steps
    return model


def spearman_interval(x, y, n: int, seed: int, level: float = 0.95) -> list[float]:
    """Percentile interval of the Spearman correlation over ``n`` resamples of the (x, y) pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(feat.stream_seed(seed, "lds", "bootstrap"))
    stats = [spearman(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(n))]
    stats = np.asarray([s for s in stats if np.isfinite(s)])
    if not len(stats):
        return [float("nan"), float("nan")]
    return [float(np.quantile(stats, (1 - level) / 2)), float(np.quantile(stats, (1 + level) / 2))]


def check_lds_options(opts: LDSOptions) -> None:
    if opts.subsets < 3:
        raise UserError(f"--subsets must be >= 3 (a rank correlation needs three points), got {opts.subsets}")
    if not 0 < opts.fraction < 1:
        raise UserError(f"--fraction must be in (0, 1), got {opts.fraction}")
    if opts.steps < 1 or opts.pool < 2 or opts.bootstrap < 0:
        raise UserError("--steps must be >= 1, --pool >= 2 and --bootstrap >= 0")


def run_lds(opts: LDSOptions, progress: bool = True) -> dict:
    """Check everything, then predict, train each subset and write the LDS into ``out``."""
    from coinfluence.models.loading import load_model
    from coinfluence.training.checkpoint import quiet_hf_progress
    check_lds_options(opts)
    aopts = AnalyzeOptions(ckpt=opts.ckpt, run=opts.run, train=opts.train, targets=opts.targets, queries=opts.pool,
                           targets_n=opts.targets_n, num_generations=opts.num_generations,
                           max_completion_length=opts.max_completion_length, target_objective=opts.target_objective,
                           precondition="adam", kernel=False, seed=opts.seed, out=opts.out)
    paths = resolve_inputs(aopts)
    if not opts.out:
        paths["out"] = paths["out"].parent / "lds" if paths["run"] is None else Run(paths["run"]).lds / paths["out"].name
    ckpt = paths["ckpts"][0]
    knobs = {**resolve_options(aopts, ckpt, paths["run"]), "task": paths["task"]}
    check_analysis_options(aopts, knobs)
    train_all, target_all = read_answered_rows(paths["train"]), read_answered_rows(paths["targets"])
    pool_rows = [train_all[i] for i in pick(train_all, opts.pool, opts.seed, "train")]
    target_rows = [target_all[i] for i in pick(target_all, opts.targets_n, opts.seed, "targets")]
    if len(pool_rows) < opts.pool:
        raise UserError(f"--pool {opts.pool} is more than the {len(pool_rows)} training queries in {paths['train']}")
    members = subset_members(opts.pool, opts.subsets, opts.fraction, opts.seed)
    grpo_resume_step(ckpt)  # a state GRPO cannot resume is refused before any work
    cfg = trainer_config(ckpt, knobs, paths["run"], seed=opts.seed, eval_steps=0, save_steps=0, save_total_limit=0,
                         prompts_per_step=len(members[0]))

    with quiet_hf_progress():
        model, tok = load_model(ckpt)
    with output_dir(paths["out"]) as tmp:
        G = int(knobs["num_generations"])
        tr = sample_groups(model, tok, pool_rows, G, knobs, opts.seed, "train", progress)
        tg = sample_groups(model, tok, target_rows, G, knobs, opts.seed, "targets", progress)
        params = feat.select_params(model)
        common = dict(num_generations=G, normalization=knobs["normalization"], max_length=int(knobs["max_completion_length"]),
                      temperature=float(knobs["temperature"]), scale_rewards=knobs["scale_rewards"], std=knobs["std"],
                      target_objective=opts.target_objective)
        args = (model, params, tr["prompts"], tr["completions"], tr["rewards"], tg["prompts"], tg["completions"], tg["rewards"],
                tok.pad_token_id)
        predicted = {"plain": delta_J_aggregated(*args, **common)["delta_J"],
                     "adam": delta_J_aggregated(*args, adam=adam_update_options(model, ckpt, params, knobs), **common)["delta_J"]}
        before = rollout_objective_terms(model, tg, opts.target_objective, knobs, tok.pad_token_id)
        observed = []
        for s, chosen in enumerate(members):
            trained = train_subset(ckpt, [pool_rows[i] for i in chosen], cfg, opts.steps, tmp, knobs["task"])
            observed.append(target_objective_change(trained, tg, before, opts.target_objective, knobs, tok.pad_token_id))
            if progress:
                print(f"subset {s + 1}/{len(members)}: observed change {observed[-1]:.4g}", flush=True)
        for leftover in tmp.glob("subset-*"):
            shutil.rmtree(leftover)
        summary = write_lds(tmp, opts, pool_rows, members, predicted, observed, tr, knobs, ckpt, paths)
    return {**summary, "out": str(paths["out"])}


def write_lds(out: Path, opts: LDSOptions, pool_rows, members, predicted: dict, observed: list[float], tr: dict, knobs: dict,
              ckpt: Path, paths: dict) -> dict:
    """subsets.parquet, queries.parquet, summary.json and figures/lds_scatter.png into ``out``."""
    import pandas as pd

    G = int(knobs["num_generations"])
    sums = {kind: [float(dj[torch.tensor(m)].sum()) for m in members] for kind, dj in predicted.items()}
    subsets = pd.DataFrame({"subset": range(len(members)), "members": members, "size": [len(m) for m in members],
                            "observed_change": observed, "predicted_plain": sums["plain"], "predicted_adam": sums["adam"]})
    queries = pd.DataFrame({"query_id": [str(r.get("id", f"train-{i}")) for i, r in enumerate(pool_rows)],
                            "alpha": tr["rewards"].reshape(-1, G).mean(1).numpy(),
                            "delta_J_plain": predicted["plain"].numpy(), "delta_J_adam": predicted["adam"].numpy()})
    for name, df in (("subsets.parquet", subsets), ("queries.parquet", queries)):
        with atomic_path(out / name) as tmp:
            df.to_parquet(tmp, index=False)
    lds = {kind: {"spearman": spearman(sums[kind], observed),
                  "interval_95": spearman_interval(sums[kind], observed, opts.bootstrap, opts.seed)} for kind in sums}
    summary = {
        "checkpoint": str(ckpt), "train_file": str(paths["train"]), "targets_file": str(paths["targets"]),
        "options": {**asdict(opts), **knobs}, "resumed_optimizer_at_step": grpo_resume_step(ckpt) or None,
        "target_objective": {"name": opts.target_objective, "definition": TARGET_OBJECTIVES[opts.target_objective]},
        "lds": lds,
        "notes": "observed_change: the target objective on fixed target rollouts after the trainer's steps on the subset, "
                 "minus before (surrogate exactly; reward importance-weighted). predicted: the sum over the subset of "
                 "delta_J per unit step at the checkpoint (plain gradient; one AdamW step per unit lr).",
    }
    write_json(out / "summary.json", summary)
    lds_scatter(subsets, lds, out / "figures" / "lds_scatter.png")
    return summary


def lds_scatter(subsets, lds: dict, out_path: Path) -> None:
    from coinfluence.plots.style import PALETTE, new_figure, save_figure, theme

    with theme():
        fig, axes = new_figure(ncols=2, panel=(3.6, 3.0))
        for ax, kind, label in zip(axes[0], ("plain", "adam"), ("plain gradient ΔJ", "Adam-aware ΔJ")):
            ax.scatter(subsets[f"predicted_{kind}"], subsets["observed_change"], s=14, color=PALETTE[0])
            lo, hi = lds[kind]["interval_95"]
            ax.set_title(f"{label}: LDS {lds[kind]['spearman']:.2f} [{lo:.2f}, {hi:.2f}]")
            ax.set_xlabel("Σ predicted ΔJ over the subset")
            ax.set_ylabel("observed change of the target objective")
        save_figure(fig, out_path)
