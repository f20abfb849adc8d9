"""``coinfluence analyze``: sample rollouts from a checkpoint, compute α, co-influence and ΔJ
per training query, optionally check the first order, and write the results (docs/run-layout.md, "analysis/").

What is computed how:

- ``delta_J`` and ``co_influence`` per train query: the *aggregated* path
  (:func:`coinfluence.influence.step.delta_J_aggregated`) — exact (never projected), one
  backward for the targets plus one per informative group.
- ``K_plus``/``K_minus`` (means over target rollouts) and, with ``save_kernel``, the full
  kernel: per-rollout features (``engine``: the layerwise batched backward where every selected
  parameter sits in a Linear/Embedding/RMSNorm, else torch.func vmap; the autograd loop on
  request), sketched when ``project_dim`` (dense Gaussian) or ``kron_rank`` (per-layer
  Kronecker) is set. Target features are held; train features are streamed in chunks, so
  memory is O(N'·D + chunk·P).
  ``kernel=False`` skips this (the columns are then NaN).

Every option and path is checked before the model is run, and the output directory appears
only when complete (``atomic_dir``).
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from coinfluence import distributed as dist_
from coinfluence.device import model_device
from coinfluence.errors import UserError
from coinfluence.influence import features as feat
from coinfluence.influence.kernel import K_plus_minus, co_influence_kernel, mean_over_targets
from coinfluence.influence.step import TARGET_OBJECTIVES, advantages, delta_J_aggregated
from coinfluence.influence.validate import grpo_resume_step, validate_first_order, validate_trainer_step
from coinfluence.io import atomic_dir, atomic_path, check_output_dir, data_splits, output_dir, write_json
from coinfluence.io import read_rows
from coinfluence.run import Run, checkpoint_step, run_of_checkpoint
from coinfluence.tasks.registry import get_task, resolve_task
from coinfluence.tasks.rewards import RewardFn, reward_fn
from coinfluence.training.objectives import LOSS_NORMALIZATION, NORMALIZATIONS, STD_CONVENTIONS


@dataclass
class AnalyzeOptions:
    """Options under their CLI names (``None`` = take it from the checkpoint's GRPO config, else the default)."""

    ckpt: str | None = None
    run: str | None = None
    train: str | None = None
    targets: str | None = None
    queries: int = 64
    targets_n: int = 32
    num_generations: int | None = None
    temperature: float | None = None
    max_completion_length: int | None = None
    normalization: str | None = None
    scale_rewards: str | None = None
    std: str | None = None
    reward: str | None = None
    params: str | None = None
    project_dim: int | None = None
    kron_rank: int | None = None
    engine: str = "auto"
    precondition: str = "none"
    target_objective: str = "surrogate"
    kernel: bool = True
    save_kernel: bool = False
    features_on_device: bool = False
    validate: int = 0
    validate_step: float = 1e-4
    validate_samples: int = 0
    chunk_size: int = 16
    all_checkpoints: bool = False
    out: str | None = None
    seed: int = 0
    overwrite: bool = False
    task: str | None = None  # None: the task the data was generated for, else the default


ENGINES = ("auto", "layerwise", "vmap", "loop")
TRAINER_KNOBS = ("learning_rate", "weight_decay", "max_grad_norm", "warmup_steps", "micro_batch_size", "loss_type",
                 "epsilon", "epsilon_high")
SAMPLING_KNOBS = ("num_generations", "temperature", "max_completion_length", "normalization", "scale_rewards", "std")


# ----------------------------------------------------------------------------- resolving inputs


def read_answered_rows(path: Path) -> list[dict]:
    return read_rows(path, ("prompt", "answer"))


def analysis_name(ckpt: Path, run: Path | None) -> str:
    """The directory name of a checkpoint's analysis: its path inside ``run``, else its name."""
    return Run(run).analysis_name(ckpt) if run is not None else ckpt.name


def run_checkpoints(run: Path) -> list[Path]:
    """RUN/sft then every RUN/grpo/step-* in step order (the training trajectory)."""
    layout = Run(run)
    found = [layout.sft] if (layout.sft / "config.json").exists() else []
    found += [p for _, p in layout.grpo_steps()]
    if not found:
        raise UserError(f"{run} has no checkpoints (expected sft/ or grpo/step-*)")
    return found


def run_data_dir(run: Path) -> Path:
    """The data a run trained on: RUN/config.json's ``train.rl_data`` or ``train.data``, else RUN/data."""
    layout = Run(run)
    try:
        recorded = layout.config().get("train") or {}
    except (OSError, ValueError):
        recorded = {}
    for key in ("rl_data", "data"):
        if recorded.get(key):
            path = Path(recorded[key])
            # Recorded relative to where `train` ran; fall back to the run's own copy.
            return path if path.is_dir() else layout.data
    return layout.data


def grpo_config_of(ckpt: Path) -> dict:
    path = ckpt / "grpo_config.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}


def grpo_settings(ckpt: Path | None, run: Path | None = None) -> dict:
    """The GRPO settings that go with a checkpoint: its own grpo_config.json (a GRPO checkpoint),
    else what its run (``run``, or the run the checkpoint sits in) recorded in RUN/config.json
    (RUN/sft: the GRPO stage that starts from it), else ``{}`` (a run older than that record, or
    a model from elsewhere: GRPOConfig's defaults apply)."""
    saved = grpo_config_of(ckpt) if ckpt is not None else {}
    if saved:
        return saved
    owner = Run(run) if run is not None else run_of_checkpoint(ckpt) if ckpt is not None else None
    return owner.grpo_settings() if owner is not None else {}


def grpo_default(name: str):
    """GRPOConfig's default of a knob (``normalization``: the ℓ of its default loss type)."""
    from coinfluence.training.grpo import GRPOConfig

    if name == "normalization":
        return LOSS_NORMALIZATION[GRPOConfig().loss_type]
    return getattr(GRPOConfig(), name)


def adam_update_options(model, ckpt: Path, params: dict, knobs: dict) -> dict:
    """The keywords of :func:`coinfluence.influence.step.adamw_update` for the GRPO step that would
    follow ``ckpt``: its saved optimizer state, else a fresh AdamW (torch's betas and eps)."""
    return {"state": feat.saved_adam_state(model, ckpt, params), "betas": (0.9, 0.999), "eps": 1e-8,
            "weight_decay": float(knobs["weight_decay"]), "max_grad_norm": float(knobs["max_grad_norm"])}


def resolve_options(opts: AnalyzeOptions, ckpt: Path | None, run: Path | None = None) -> dict:
    """Fill unset GRPO knobs from :func:`grpo_settings` (what the run trained, or will train,
    with), then GRPOConfig's defaults."""
    saved = grpo_settings(ckpt, run)
    out = {}
    for name in SAMPLING_KNOBS:
        value = getattr(opts, name)
        if value is None and name == "normalization" and saved.get("loss_type") in LOSS_NORMALIZATION:
            value = LOSS_NORMALIZATION[saved["loss_type"]]
        if value is None and name != "normalization":
            value = saved.get(name)
        out[name] = grpo_default(name) if value is None else value
    for name in TRAINER_KNOBS:  # the update the trainer would take next, for the Adam-aware ΔJ and --validate
        out[name] = saved.get(name, grpo_default(name))
    out["reward"] = opts.reward or saved.get("reward")  # None: chosen by the data (reward_function)
    return out


def check_analysis_options(opts: AnalyzeOptions, knobs: dict) -> None:
    if knobs["normalization"] not in NORMALIZATIONS:
        raise UserError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {knobs['normalization']!r}")
    if knobs["scale_rewards"] not in ("group", "none"):
        raise UserError(f"--scale-rewards must be group or none (batch scaling has no per-query ΔJ), got {knobs['scale_rewards']!r}")
    if knobs["std"] not in STD_CONVENTIONS:
        raise UserError(f"--std must be one of {', '.join(STD_CONVENTIONS)}, got {knobs['std']!r}")
    if knobs["reward"] is not None:
        reward_fn(knobs["reward"], knobs.get("task"))  # e.g. progress needs a task that counts steps
    if int(knobs["num_generations"]) < 2:
        raise UserError(f"--num-generations must be >= 2, got {knobs['num_generations']}")
    if not float(knobs["temperature"]) > 0:
        raise UserError(f"--temperature must be > 0, got {knobs['temperature']}")
    if int(knobs["max_completion_length"]) < 1:
        raise UserError("--max-completion-length must be >= 1")
    for name in ("queries", "targets_n", "chunk_size"):
        if getattr(opts, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    if opts.validate < 0 or (opts.project_dim is not None and opts.project_dim < 0):
        raise UserError("--validate and --project-dim must be >= 0")
    if opts.validate_samples < 0:
        raise UserError("--validate-samples must be >= 0")
    if not 0 < opts.validate_step < 1:
        raise UserError("--validate-step must be in (0, 1)")
    if opts.engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {opts.engine!r}")
    if opts.kron_rank is not None:
        if opts.kron_rank < 1:
            raise UserError(f"--kron-rank must be >= 1, got {opts.kron_rank}")
        if opts.project_dim or opts.precondition != "none" or opts.engine in ("vmap", "loop"):
            raise UserError("--kron-rank is a layerwise sketch: it excludes --project-dim, --precondition adam and --engine vmap/loop")
    if opts.precondition not in ("none", "adam"):
        raise UserError(f"--precondition must be none or adam, got {opts.precondition!r}")
    if opts.target_objective not in TARGET_OBJECTIVES:
        raise UserError(f"--target-objective must be one of {', '.join(TARGET_OBJECTIVES)}, got {opts.target_objective!r}")
    if opts.save_kernel and not opts.kernel:
        raise UserError("--save-kernel needs the kernel; drop --no-kernel")
    if opts.features_on_device and not opts.kernel:
        raise UserError("--features-on-device concerns the kernel's features; drop --no-kernel")
    if opts.params:
        try:
            re.compile(opts.params)
        except re.error as err:
            raise UserError(f"--params is not a valid regular expression: {err}") from None


def resolve_inputs(opts: AnalyzeOptions) -> dict:
    """Paths to analyse and write; raises UserError before any work."""
    from coinfluence.models.loading import check_checkpoint_dir

    run = Path(opts.run) if opts.run else None
    if run is not None and not run.is_dir():
        raise UserError(f"run directory not found: {run}")
    if opts.all_checkpoints:
        if run is None:
            raise UserError("--all-checkpoints needs --run")
        ckpts = run_checkpoints(run)
    else:
        if not opts.ckpt:
            raise UserError("pass --ckpt PATH (or --run RUN --all-checkpoints)")
        ckpts = [Path(opts.ckpt)]
    ckpts = [check_checkpoint_dir(c) for c in ckpts]
    if run is not None and (opts.train or opts.targets):
        raise UserError("pass either --run or --train/--targets, not both")
    if run is not None:
        data = run_data_dir(run)
        splits = data_splits(data) if data.exists() else {}
        if "rl_train" not in splits or "val_id" not in splits:
            raise UserError(f"{data} lacks the rl_train and val_id splits the analysis of a run reads")
        train, targets = splits["rl_train"], splits["val_id"]
    elif opts.train and opts.targets:
        train, targets = Path(opts.train), Path(opts.targets)
    else:
        raise UserError("pass --run RUN, or both --train FILE and --targets FILE")
    for p in (train, targets):
        if not p.exists():
            raise UserError(f"data not found: {p}")
    if opts.out:
        out = Path(opts.out)
    elif opts.all_checkpoints:
        out = Run(run).analysis
    elif run is not None:
        out = Run(run).analysis / analysis_name(ckpts[0], run)
    else:
        out = ckpts[0] / "analysis"
    task = resolve_task(opts.task, data if run is not None else train.parent)
    check_output_dir(out, overwrite=opts.overwrite, inputs=[*ckpts, train, targets, *([run] if run else [])])
    if opts.all_checkpoints:  # each checkpoint's analysis replaces a dir of that name: only an analysis
        for c in ckpts:
            entry = out / analysis_name(c, run)
            if entry.exists() and not (entry / "summary.json").is_file():
                raise UserError(f"{entry} exists and is not an analysis; not replacing it")
    return {"run": run, "ckpts": ckpts, "train": train, "targets": targets, "out": out, "task": task.name}


# ----------------------------------------------------------------------------- rollouts


def reward_function(rows: Sequence[dict], name: str | None = None, task=None) -> tuple[str, RewardFn]:
    """The reward ``name`` (``coinfluence.tasks.rewards``); unset, ``task``'s own reward for data
    it reads (its prompts parse) and exact match for any other data."""
    task = get_task(task)
    if name is None:
        name = task.reward if task.reads(rows[0]["prompt"]) else "exact"
    return name, reward_fn(name, task)


def pick(rows: Sequence[dict], n: int, seed: int, salt: str) -> list[int]:
    """``n`` row indices, a seeded choice: the same queries for every checkpoint of a run."""
    idx = list(range(len(rows)))
    random.Random(f"{seed}:analyze:{salt}").shuffle(idx)
    return sorted(idx[:n])


def sample_groups(model, tokenizer, rows: Sequence[dict], G: int, knobs: dict, seed: int, salt: str, progress: bool,
                  batch_queries: int = 8) -> dict:
    """``G`` rollouts per row (group after group) with the shared sampler, scored 0/1."""
    from coinfluence.models.format import decode_completion, encode_prompt
    from coinfluence.training.evaluate import stop_token_ids
    from coinfluence.training.rollout import sample

    kind, score = reward_function(rows, knobs.get("reward"), knobs.get("task"))
    stops = stop_token_ids(model, tokenizer)
    gen = torch.Generator().manual_seed(feat.stream_seed(seed, "analyze", salt))
    prompts, completions, logps, lengths = [], [], [], []
    for s in tqdm(range(0, len(rows), batch_queries), desc=f"sampling {salt}", file=sys.stderr, disable=not progress,
                  dynamic_ncols=True, leave=False):
        chunk = [encode_prompt(tokenizer, r["prompt"]) for r in rows[s : s + batch_queries] for _ in range(G)]
        ro = sample(model, chunk, max_new_tokens=int(knobs["max_completion_length"]), temperature=float(knobs["temperature"]),
                    top_p=1.0, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                    stop_token_ids=stops, generator=gen)
        prompts += [list(p) for p in chunk]
        completions += ro.completions()
        logps += ro.sequence_logprobs().tolist()
        lengths += ro.lengths.tolist()
    texts = [decode_completion(tokenizer, c) for c in completions]
    answers = [r["answer"] for r in rows for _ in range(G)]
    questions = [r["prompt"] for r in rows for _ in range(G)]
    rewards = torch.tensor([score(q, t, a) for q, t, a in zip(questions, texts, answers)], dtype=torch.float64)
    return {"prompts": prompts, "completions": completions, "texts": texts, "rewards": rewards,
            "logprob": logps, "length": lengths, "reward_kind": kind}


# ----------------------------------------------------------------------------- one checkpoint


def feature_engine(model, params, requested: str) -> str:
    """``auto`` → ``layerwise`` when it can take every selected parameter, else ``vmap``."""
    from coinfluence.influence.layerwise import owners

    if requested != "auto":
        if requested == "layerwise":
            owners(model, params)  # raises UserError naming the module it cannot take
        return requested
    try:
        owners(model, params)
        return "layerwise"
    except UserError:
        return "vmap"


def engine_features(engine: str, model, prompts, completions, pad_id: int, **kw) -> torch.Tensor:
    """Per-rollout features from the engine :func:`feature_engine` chose (rows: rollouts)."""
    from coinfluence.influence.layerwise import features_layerwise

    kron_rank = kw.pop("kron_rank", None)
    if engine == "layerwise":
        return features_layerwise(model, prompts, completions, pad_id, kron_rank=kron_rank, **kw)
    if engine == "loop":
        kw.pop("chunk_size")
        return feat.features_loop(model, prompts, completions, pad_id, **kw)
    return feat.features_vmap(model, prompts, completions, pad_id, **kw)


def kernel_streaming(model, params, tr: dict, tg: dict, pad_id: int, *, scales, project_dim, knobs, seed, chunk_size, progress,
                     engine: str = "vmap", kron_rank: int | None = None, num_generations: int = 1,
                     on_device: bool = False):
    """``K`` [target rollouts, train rollouts]: target features held, train features in chunks.
    With ``on_device`` the features and ``K`` stay on the model's device (see
    :func:`features.feature_rows`); otherwise both are in host memory.

    Under torchrun each rank makes the features of its share of the target groups, all-gathered
    (N'·D numbers; exchanging tiles of K instead would move the train features, Q·G·D, which
    is more whenever there are more train than target rollouts), and the columns of K of its
    share of the train groups, all-gathered into the whole K.
    """
    kw = dict(normalization=knobs["normalization"], max_length=int(knobs["max_completion_length"]),
              temperature=float(knobs["temperature"]), params=params, chunk_size=chunk_size,
              project_dim=project_dim or None, seed=seed, scales=scales, on_device=on_device)
    if kron_rank:
        kw["kron_rank"] = kron_rank
    with feat.projection_cache():  # target and train rows share one draw of the sketch blocks
        mine, counts = dist_.group_shard(len(tg["prompts"]), num_generations)
        F_t = dist_.gather_rows(engine_features(engine, model, tg["prompts"][mine], tg["completions"][mine], pad_id, **kw), counts)
        mine, counts = dist_.group_shard(len(tr["prompts"]), num_generations)
        prompts, completions = tr["prompts"][mine], tr["completions"][mine]
        if project_dim or kron_rank:  # sketches are small: one call
            K = co_influence_kernel(F_t, engine_features(engine, model, prompts, completions, pad_id, **kw))
        else:
            n = len(prompts)
            K = torch.empty(F_t.shape[0], n, dtype=torch.float64, device=F_t.device)
            step = 4 * chunk_size
            for s in tqdm(range(0, n, step), desc="train features", file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=False):
                F = engine_features(engine, model, prompts[s : s + step], completions[s : s + step], pad_id, **kw)
                K[:, s : s + step] = co_influence_kernel(F_t, F)
    return dist_.gather_rows(K.T.contiguous(), counts).T, F_t.shape[1]


def analyze_checkpoint(ckpt: Path, train_rows, target_rows, opts: AnalyzeOptions, knobs: dict, out: Path,
                       sources: dict, progress: bool = True) -> dict:
    """Run the analysis of one checkpoint and write its files into ``out`` (an existing, temporary dir;
    None on the ranks that only compute)."""
    from coinfluence.models.loading import check_prompt_lengths, load_model
    from coinfluence.training.checkpoint import quiet_hf_progress

    timings = {}
    started = time.perf_counter()
    with quiet_hf_progress():
        model, tok = load_model(ckpt)
    check_prompt_lengths(model, tok, [r["prompt"] for r in (*train_rows, *target_rows)], int(knobs["max_completion_length"]))
    params = feat.select_params(model, opts.params)
    if opts.kernel:
        feature_engine(model, params, opts.engine)  # an engine that cannot take the model says so before sampling
    adam = adam_update_options(model, ckpt, params, knobs) if opts.precondition == "adam" else None
    scales = feat.preconditioner_scales(adam["state"], params) if adam and adam["state"] else None
    G = int(knobs["num_generations"])

    t = time.perf_counter()
    tr = sample_groups(model, tok, train_rows, G, knobs, opts.seed, "train", progress)
    tg = sample_groups(model, tok, target_rows, G, knobs, opts.seed, "targets", progress)
    timings["sampling_s"] = time.perf_counter() - t
    warn_if_u_is_zero(ckpt, tg["rewards"], G)

    with feat.grad_only_for(model, params):  # gradients of the selected parameters only
        t = time.perf_counter()
        agg = delta_J_aggregated(model, params, tr["prompts"], tr["completions"], tr["rewards"], tg["prompts"], tg["completions"],
                                 tg["rewards"], tok.pad_token_id, num_generations=G, scale_rewards=knobs["scale_rewards"],
                                 std=knobs["std"], scales=scales, adam=adam, target_objective=opts.target_objective,
                                 micro_batch=4 * opts.chunk_size, progress=progress, **_ell_knobs(knobs))
        timings["delta_J_s"] = time.perf_counter() - t

        kernel = {"K_plus": np.full(len(train_rows), np.nan), "K_minus": np.full(len(train_rows), np.nan),
                  "feature_dim": None, "engine": None}
        if opts.kernel:
            t = time.perf_counter()
            kernel = kernel_columns(model, params, tr, tg, tok.pad_token_id, scales, opts, knobs, out, progress)
            timings["kernel_s"] = time.perf_counter() - t

    validation = None
    if opts.validate and dist_.is_main():
        t = time.perf_counter()
        validation = validation_of(model, tok, ckpt, params, tr, tg, target_rows, agg["alpha"], scales, opts, knobs, progress)
        timings["validate_s"] = time.perf_counter() - t

    if out is None:  # a rank other than 0 under torchrun: rank 0 writes
        return {}
    write_tables(out, tr, tg, train_rows, target_rows, agg, kernel, knobs)
    timings["total_s"] = time.perf_counter() - started
    summary = {
        "checkpoint": str(ckpt), "step": checkpoint_step(ckpt), **sources, "reward": tr["reward_kind"],
        "options": {**asdict(opts), **knobs}, "num_parameters_selected": feat.num_features(params),
        "feature_dim": kernel["feature_dim"], "feature_engine": kernel["engine"], "device": str(model_device(model)),
        **summary_numbers(tr, tg, agg, G, opts.target_objective, adam),
        "validation": validation, "timings": timings, "notes": SUMMARY_NOTES,
    }
    write_json(out / "summary.json", summary)
    return summary


SUMMARY_NOTES = ("delta_J and co_influence: exact aggregated path (not projected); K_plus/K_minus: means over target "
                 "rollouts of the kernel (sketched if project_dim or kron_rank); co_influence NaN where alpha in {0,1}, delta_J 0 there.")


def _ell_knobs(knobs: dict) -> dict:
    """The keywords that fix ``ℓ`` (normalisation, length, temperature) from the resolved knobs."""
    return dict(normalization=knobs["normalization"], max_length=int(knobs["max_completion_length"]),
                temperature=float(knobs["temperature"]))


def kernel_columns(model, params, tr: dict, tg: dict, pad_id: int, scales, opts: AnalyzeOptions, knobs: dict, out: Path | None,
                   progress: bool) -> dict:
    """``K_plus`` and ``K_minus`` per train query (means over the target rollouts), the feature
    dimension and engine; with ``save_kernel`` the whole kernel goes to OUT/kernel.npy."""
    G = int(knobs["num_generations"])
    engine = feature_engine(model, params, opts.engine)
    K, feature_dim = kernel_streaming(model, params, tr, tg, pad_id, scales=scales, project_dim=opts.project_dim, knobs=knobs,
                                      seed=opts.seed, chunk_size=opts.chunk_size, progress=progress, engine=engine,
                                      kron_rank=opts.kron_rank, num_generations=G, on_device=opts.features_on_device)
    Kp, Km = K_plus_minus(K, tr["rewards"], G)  # reduced where K is; only [Q] numbers come back
    if opts.save_kernel and out is not None:
        with atomic_path(out / "kernel.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, K.cpu().numpy())
    return {"K_plus": mean_over_targets(Kp).cpu().numpy(), "K_minus": mean_over_targets(Km).cpu().numpy(),
            "feature_dim": feature_dim, "engine": engine}


def validation_of(model, tok, ckpt: Path, params, tr: dict, tg: dict, target_rows, alpha: torch.Tensor, scales,
                  opts: AnalyzeOptions, knobs: dict, progress: bool) -> dict:
    """The first-order check on ``opts.validate`` informative train queries (a seeded choice): a
    small SGD step, and the trainer's own step beside it."""
    G = int(knobs["num_generations"])
    informative = [q for q in range(len(alpha)) if 0 < float(alpha[q]) < 1]
    chosen = sorted(random.Random(f"{opts.seed}:validate").sample(informative, min(opts.validate, len(informative))))
    res = validate_first_order(model, params, tr["prompts"], tr["completions"], tr["rewards"], chosen, tg["prompts"],
                               tg["completions"], tg["rewards"], tok.pad_token_id, num_generations=G,
                               scale_rewards=knobs["scale_rewards"], std=knobs["std"], scales=scales,
                               relative_step=opts.validate_step, micro_batch=opts.chunk_size, progress=progress,
                               **_ell_knobs(knobs))
    # The small SGD step's numbers at the top level (the report reads them), the trainer's step beside them.
    return {**{k: v for k, v in res.items() if k not in ("dlogp_observed", "dlogp_predicted")},
            "trainer_step": validate_against_trainer(model, tok, ckpt, tr, tg, target_rows, chosen, knobs, opts)}


def write_tables(out: Path, tr: dict, tg: dict, train_rows, target_rows, agg: dict, kernel: dict, knobs: dict) -> None:
    """OUT/queries.parquet (one row per train and target query), OUT/rollouts.parquet (one per
    rollout) and the two figures drawn from them."""
    import pandas as pd

    from coinfluence.influence.step import weight
    from coinfluence.plots.analysis import alpha_histogram, delta_J_by_alpha

    G, scale, std = int(knobs["num_generations"]), knobs["scale_rewards"], knobs["std"]
    Q, T = len(train_rows), len(target_rows)
    alpha_t = tg["rewards"].reshape(-1, G).mean(1)
    qid = lambda role, rows, i: str(rows[i].get("id", f"{role}-{i}"))  # noqa: E731
    no_target = np.full(T, np.nan)
    queries = pd.DataFrame({
        "query_id": [qid("train", train_rows, i) for i in range(Q)] + [qid("target", target_rows, i) for i in range(T)],
        "role": ["train"] * Q + ["target"] * T,
        "alpha": np.concatenate([agg["alpha"].numpy(), alpha_t.numpy()]),
        "n_correct": np.concatenate([tr["rewards"].reshape(-1, G).sum(1).numpy(), tg["rewards"].reshape(-1, G).sum(1).numpy()]).astype(int),
        "num_generations": G,
        "weight": np.concatenate([agg["weight"].numpy(), weight(alpha_t, G, scale, std).numpy()]),
        "K_plus": np.concatenate([kernel["K_plus"], no_target]),
        "K_minus": np.concatenate([kernel["K_minus"], no_target]),
        "co_influence": np.concatenate([agg["co_influence"].numpy(), no_target]),
        "delta_J": np.concatenate([agg["delta_J"].numpy(), no_target]),
    })
    parts = []
    for role, d, rows in (("train", tr, train_rows), ("target", tg, target_rows)):
        parts.append(pd.DataFrame({
            "query_id": [qid(role, rows, i // G) for i in range(len(d["prompts"]))],
            "rollout_id": [i % G for i in range(len(d["prompts"]))],
            "role": role,
            "prompt_ids": d["prompts"], "completion_ids": d["completions"], "completion": d["texts"],
            "reward": d["rewards"].numpy(), "advantage": advantages(d["rewards"], G, scale, std).numpy(),
            "logprob": d["logprob"], "length": d["length"],
        }))
    for name, df in (("queries.parquet", queries), ("rollouts.parquet", pd.concat(parts, ignore_index=True))):
        with atomic_path(out / name) as tmp:
            df.to_parquet(tmp, index=False)
    (out / "figures").mkdir(exist_ok=True)
    alpha_histogram(out, out / "figures" / "alpha_hist.png")
    delta_J_by_alpha(out, out / "figures" / "delta_J_by_alpha.png")


def warn_if_u_is_zero(ckpt: Path, target_rewards: torch.Tensor, G: int) -> None:
    """One warning line when no target group carries a gradient (then u = 0 and every ΔJ is 0)."""
    if dist_.is_main() and informative_share(target_rewards, G) == 0:
        print(f"warning: every target group of {ckpt} is all right or all wrong, so the target direction u is 0 and "
              "every ΔJ is 0; use more targets (--targets-n) or a higher --temperature", file=sys.stderr)


def informative_share(rewards: torch.Tensor, G: int) -> float:
    """Share of groups whose rewards differ (0 < α < 1): only these carry a GRPO gradient."""
    groups = rewards.reshape(-1, G)
    return float((groups.amax(1) > groups.amin(1)).double().mean())


def summary_numbers(tr: dict, tg: dict, agg: dict, G: int, target_objective: str, adam: dict | None) -> dict:
    """The headline numbers of summary.json: α histogram and means, target accuracy, mean
    co-influence and ΔJ, and what the target objective and the update were."""
    a = agg["alpha"]
    informative = (a > 0) & (a < 1)
    return {
        "n_train_queries": len(a), "n_target_queries": len(tg["rewards"]) // G,
        "frac_target_informative": informative_share(tg["rewards"], G),
        "alpha_hist": {"n_correct": list(range(G + 1)), "count": torch.bincount(tr["rewards"].reshape(-1, G).sum(1).long(), minlength=G + 1).tolist()},
        "frac_informative": float(informative.double().mean()),
        "mean_alpha": float(a.mean()),
        "target_accuracy": float(tg["rewards"].mean()),
        "mean_co_influence": float(agg["co_influence"][informative].mean()) if informative.any() else None,
        "mean_delta_J": float(agg["delta_J"].mean()),
        "target_objective": {"name": target_objective, "definition": TARGET_OBJECTIVES[target_objective],
                             "other": {k: v for k, v in TARGET_OBJECTIVES.items() if k != target_objective}},
        "delta_J_update": ("one AdamW step per unit lr (" + ("saved optimizer state" if adam["state"] else "fresh optimizer")
                           + "): <u, Δθ/lr>") if adam else "plain gradient step per unit η: <u, ∇J(q)>",
    }


def trainer_config(ckpt: Path, knobs: dict, run: Path | None = None, **changes):
    """The GRPO trainer's config for a step from ``ckpt``: its :func:`grpo_settings` (else the
    defaults), with the analysis' sampling knobs and ``changes``."""
    from dataclasses import fields, replace

    from coinfluence.training.grpo import GRPOConfig

    known = {f.name for f in fields(GRPOConfig)}
    saved = {k: v for k, v in grpo_settings(ckpt, run).items() if k in known}
    return replace(GRPOConfig(**saved), num_generations=int(knobs["num_generations"]), temperature=float(knobs["temperature"]),
                   max_completion_length=int(knobs["max_completion_length"]), scale_rewards=knobs["scale_rewards"],
                   std=knobs["std"], **changes)


def predicted_per_kind(model, ckpt: Path, tr: dict, tg: dict, chosen: Sequence[int], knobs: dict, pad_id: int,
                       target_objective: str) -> dict[str, torch.Tensor]:
    """Plain and Adam-aware ΔJ (all parameters: the trainer moves them all) of the ``chosen`` train
    groups, in a ``[Q]`` tensor (NaN elsewhere)."""
    G = int(knobs["num_generations"])
    rows = [i for q in chosen for i in range(q * G, (q + 1) * G)]
    params = feat.select_params(model)
    args = (model, params, [tr["prompts"][i] for i in rows], [tr["completions"][i] for i in rows], tr["rewards"][rows],
            tg["prompts"], tg["completions"], tg["rewards"], pad_id)
    kw = dict(num_generations=G, normalization=knobs["normalization"], max_length=int(knobs["max_completion_length"]),
              temperature=float(knobs["temperature"]), scale_rewards=knobs["scale_rewards"], std=knobs["std"],
              target_objective=target_objective)
    out = {}
    for kind, adam in (("plain", None), ("adam", adam_update_options(model, ckpt, params, knobs))):
        full = torch.full((len(tr["rewards"]) // G,), float("nan"), dtype=torch.float64)
        full[list(chosen)] = delta_J_aggregated(*args, adam=adam, **kw)["delta_J"]
        out[kind] = full
    return out


def validate_against_trainer(model, tok, ckpt: Path, tr: dict, tg: dict, target_rows, chosen, knobs: dict, opts) -> dict:
    """The trainer's real step on each chosen query vs ``lr·ΔJ`` (plain and Adam-aware), observed on
    the fixed target rollouts and, with ``validate_samples``, by fresh sampling."""
    def fresh_accuracy(m):
        r = sample_groups(m, tok, target_rows, opts.validate_samples, knobs, opts.seed, "validate-fresh", False)["rewards"]
        return float(r.mean()), float(r.std() / len(r) ** 0.5)

    predicted = predicted_per_kind(model, ckpt, tr, tg, chosen, knobs, tok.pad_token_id, opts.target_objective)
    return validate_trainer_step(model, ckpt, trainer_config(ckpt, knobs, Path(opts.run) if opts.run else None), tr, chosen, tg, knobs, tok.pad_token_id,
                                 predicted=predicted, target_objective=opts.target_objective,
                                 fresh_accuracy=fresh_accuracy if opts.validate_samples else None)


# ----------------------------------------------------------------------------- entry point


def run_analysis(opts: AnalyzeOptions, progress: bool = True) -> dict:
    """Check everything, then analyse one checkpoint (or a run's trajectory); returns the summary
    (for ``all_checkpoints``: ``{"checkpoints": [...summaries], "out": ...}``)."""
    paths = resolve_inputs(opts)
    progress = progress and dist_.is_main()
    knobs = {**resolve_options(opts, paths["ckpts"][-1], paths["run"]), "task": paths["task"]}
    check_analysis_options(opts, knobs)
    if opts.validate:
        for c in paths["ckpts"]:
            grpo_resume_step(c)  # a state GRPO cannot resume is refused before any work
    train_all, target_all = read_answered_rows(paths["train"]), read_answered_rows(paths["targets"])
    train_rows = [train_all[i] for i in pick(train_all, opts.queries, opts.seed, "train")]
    target_rows = [target_all[i] for i in pick(target_all, opts.targets_n, opts.seed, "targets")]
    sources = {"train_file": str(paths["train"]), "targets_file": str(paths["targets"])}
    if paths["run"] is not None:
        sources["source"] = "train queries from RUN/data/rl_train.jsonl, targets from RUN/data/val_id.jsonl"
    dist_.require_at_least_one_each(min(len(train_rows), len(target_rows)), "the number of train or target queries")
    torch.manual_seed(opts.seed)
    # Under torchrun every rank computes its share; rank 0 alone writes.
    main_only = lambda writer: writer if dist_.is_main() else nullcontext(None)  # noqa: E731
    if not opts.all_checkpoints:
        with main_only(output_dir(paths["out"])) as tmp:
            summary = analyze_checkpoint(paths["ckpts"][0], train_rows, target_rows, opts, knobs, tmp, sources, progress)
        dist_.barrier()
        return {**summary, "out": str(paths["out"])}

    import pandas as pd

    summaries = []
    for c in paths["ckpts"]:
        name = analysis_name(c, paths["run"])
        with main_only(atomic_dir(paths["out"] / name)) as tmp:
            summaries.append(analyze_checkpoint(c, train_rows, target_rows, opts, knobs, tmp, sources, progress))
    dist_.barrier()
    if not dist_.is_main():
        return {"checkpoints": [], "out": str(paths["out"])}
    series = pd.DataFrame([{
        "checkpoint": analysis_name(Path(s["checkpoint"]), paths["run"]), "step": s["step"],
        "mean_co_influence": s["mean_co_influence"], "mean_delta_J": s["mean_delta_J"],
        "frac_informative": s["frac_informative"], "mean_alpha": s["mean_alpha"],
    } for s in summaries])
    with atomic_path(paths["out"] / "timeseries.csv") as tmp:
        series.to_csv(tmp, index=False)
    return {"checkpoints": summaries, "out": str(paths["out"])}
