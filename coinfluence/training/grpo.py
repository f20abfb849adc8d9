"""GRPO with a verifiable 0/1 reward, on any Hugging Face causal LM.

One step: take ``prompts_per_step`` queries (a seeded, resumable order), sample
``num_generations`` rollouts each with the shared sampler, score them with the task's
reward, compute group advantages (:func:`grpo_advantages`), and descend the clipped
surrogate (:func:`grpo_loss`) ``num_iterations`` times. Knob and metric names follow TRL.
With ``num_iterations = 1`` the old log-probs are the current ones detached, so the step is
exactly on-policy: the update the influence analysis predicts.
"""

from __future__ import annotations

import copy
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from coinfluence import distributed as dist_
from coinfluence.device import model_device
from coinfluence.errors import UserError
from coinfluence.models.format import decode_completion, encode_prompt
from coinfluence.run import STEP_DIR, Run
from coinfluence.tasks.answer import extract_answer
from coinfluence.tasks.registry import get_task
from coinfluence.tasks.rewards import DEFAULT_REWARD, REWARD_HELP, accuracy_reward, reward_fn, reward_scores
from coinfluence.training import checkpoint as ckpt_io
from coinfluence.training.evaluate import greedy_scores, stop_token_ids
from coinfluence.training.metrics import drop_metrics_after, log_metrics
from coinfluence.training.objectives import (
    LOSS_TYPES, SCALE_REWARDS, STD_CONVENTIONS, batch_to, grpo_advantages, grpo_loss, rollout_batch, sequence_logprobs,
)
from coinfluence.training.rollout import chunks_by_length, sample

STAGE = "grpo"


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class GRPOConfig:
    learning_rate: float = _opt(1e-4, "AdamW learning rate (constant after warmup); 5e-4 degraded the mini default.")
    warmup_steps: int = _opt(5, "Linear warmup steps.")
    max_steps: int = _opt(120, "GRPO steps.")
    prompts_per_step: int = _opt(16, "Queries per step; each gets num_generations rollouts.")
    num_generations: int = _opt(8, "Rollouts per query (G).")
    micro_batch_size: int = _opt(32, "Rollouts per forward/backward pass, grouped by length (does not change the step).")
    num_iterations: int = _opt(1, "Optimisation passes over each batch of rollouts (1 = exactly on-policy).")
    beta: float = _opt(0.0, "Weight of the k3 KL penalty to the initial model (0 keeps no reference model).")
    epsilon: float = _opt(0.2, "Lower clipping range of the ratio.")
    epsilon_high: float | None = _opt(None, "Upper clipping range (default: epsilon).")
    loss_type: str = _opt("grpo", "grpo (per-sequence mean), dr_grpo (sum / max length) or dapo (token mean over the batch).")
    scale_rewards: str = _opt("group", "Divide advantages by the std of the group, of the batch, or none.")
    std: str = _opt("population", "Std convention: population (ddof 0, the theory's) or unbiased (ddof 1, TRL's).")
    temperature: float = _opt(1.0, "Sampling temperature (log-probs are taken at the same temperature).")
    top_p: float = _opt(1.0, "Nucleus sampling threshold.")
    max_completion_length: int = _opt(256, "Most new tokens per rollout.")
    max_grad_norm: float = _opt(1.0, "Clip the gradient norm (0 disables).")
    format_reward: float = _opt(0.0, "Extra reward for a well-formed answer marker (0 disables).")
    reward: str = _opt(DEFAULT_REWARD, REWARD_HELP[0].upper() + REWARD_HELP[1:] + ".")
    weight_decay: float = _opt(0.0, "AdamW weight decay.")
    logging_steps: int = _opt(1, "Append a metrics row every this many steps.")
    eval_steps: int = _opt(25, "Greedy val_id/val_ood accuracy every this many steps (0: only at the end).")
    eval_size: int = _opt(128, "Rows of each validation split used for the periodic accuracy.")
    save_steps: int = _opt(50, "Checkpoint RUN/grpo/step-XXXXXX every this many steps (0: only the final one).")
    save_total_limit: int = _opt(0, "Keep only this many step checkpoints (0 keeps all, for influence through training).")
    seed: int = _opt(0, "Seed of the query order and of every rollout.")


def validate_config(cfg: GRPOConfig) -> None:
    for name in ("learning_rate", "max_steps", "prompts_per_step", "micro_batch_size", "num_iterations", "max_completion_length", "logging_steps"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"grpo option {name} must be > 0, got {getattr(cfg, name)}")
    if cfg.num_generations < 2:
        raise UserError(f"grpo option num_generations must be >= 2 (advantages compare rollouts), got {cfg.num_generations}")
    for name, allowed in (("loss_type", LOSS_TYPES), ("scale_rewards", SCALE_REWARDS), ("std", STD_CONVENTIONS)):
        if getattr(cfg, name) not in allowed:
            raise UserError(f"grpo option {name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    reward_fn(cfg.reward)
    if cfg.temperature <= 0 or not 0 < cfg.top_p <= 1:
        raise UserError("grpo needs temperature > 0 and 0 < top_p <= 1")
    if cfg.beta < 0 or cfg.epsilon < 0 or cfg.warmup_steps < 0 or cfg.eval_steps < 0 or cfg.save_steps < 0:
        raise UserError("grpo options beta, epsilon, warmup_steps, eval_steps and save_steps must be >= 0")
    dist_.require_at_least_one_each(cfg.prompts_per_step, "grpo option prompts_per_step (queries per step, split across ranks)")


def query_order(n_rows: int, seed: int, step: int, per_step: int) -> list[int]:
    """Row indices for ``step``: epochs of seeded permutations, a pure function of the step."""
    out = []
    start = step * per_step
    for pos in range(start, start + per_step):
        epoch, k = divmod(pos, n_rows)
        perm = list(range(n_rows))
        random.Random(f"{seed}:grpo-order:{epoch}").shuffle(perm)
        out.append(perm[k])
    return out


def reward_completions(completions: Sequence[str], answers: Sequence, format_weight: float, prompts: Sequence[str] | None = None,
          kind: str = DEFAULT_REWARD, task=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(correctness: the reward ``kind`` of ``coinfluence.tasks.rewards``, total reward = correctness
    + format bonus). ``prompts`` are needed by rewards that read the question (``steps``, graded by
    ``task``'s checker)."""
    prompts = prompts if prompts is not None else [None] * len(completions)
    correct = torch.tensor(reward_scores(kind, prompts, completions, answers, task), dtype=torch.float64)
    if not format_weight:
        return correct, correct
    formatted = torch.tensor([extract_answer(c) is not None for c in completions], dtype=torch.float64)
    return correct, correct + format_weight * formatted


def make_optimizer(model, cfg: GRPOConfig):
    """AdamW over every parameter (one group) and its linear warmup to a constant rate."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = lambda s: min(1.0, (s + 1) / (cfg.warmup_steps + 1)) if cfg.warmup_steps else 1.0  # noqa: E731
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def step_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """``(step, dir)`` of the resumable checkpoints in RUN/grpo (those with a trainer state), in step order."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and (p / ckpt_io.TRAINER_STATE).exists()]
    return sorted(found)


@dataclass
class _Loop:
    """What every GRPO step of one run reads: the knobs, the model and its optimizer, the encoded
    training queries, and this rank's share ``[first, stop)`` of each step's queries."""
    cfg: GRPOConfig
    model: object
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    ref_model: object
    train_rows: Sequence[dict]
    prompts: list
    stops: list
    first: int
    stop: int
    task: object  # the Task whose checker verifies steps


def train_grpo(
    cfg: GRPOConfig,
    model,
    tokenizer,
    train_rows: Sequence[dict],
    val_rows: dict[str, Sequence[dict]] | None,
    out_dir: str | Path,
    resume: bool = False,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    sink=None,  # metrics.metric_sink: each logged row also goes there (TensorBoard)
    task=None,  # the Task (or its name) whose checker verifies steps; None: the default task
) -> dict:
    """Train ``model`` in place; write RUN/grpo/step-XXXXXX/, RUN/grpo/final/, RUN/metrics.jsonl."""
    validate_config(cfg)
    task = get_task(task)
    reward_fn(cfg.reward, task)  # a reward the task cannot give fails here, before any work
    if not train_rows:
        raise UserError("no RL training rows")
    out_dir = Path(out_dir)
    run = Run(out_dir)
    root = run.grpo
    loop, step = _start(cfg, model, tokenizer, train_rows, out_dir, root, resume, task)
    evals = {name: list(rows)[: cfg.eval_size] for name, rows in (val_rows or {}).items() if dist_.is_main()}
    evals = {name: rows for name, rows in evals.items() if rows}  # --eval-size 0 or an empty split: nothing to validate
    if step == 0 and evals and cfg.eval_steps:  # the start of the accuracy curves: the model RL begins from
        log_metrics(out_dir, STAGE, 0, sink=sink, **_validation(loop, evals))
    bar = tqdm(total=cfg.max_steps, initial=step, desc="grpo", file=sys.stderr, disable=not progress or not dist_.is_main(), dynamic_ncols=True)
    while step < cfg.max_steps:
        started = time.perf_counter()
        row = _grpo_step(loop, step)
        loop.scheduler.step()
        step += 1
        bar.update(1)
        evaluate_now = evals and ((cfg.eval_steps and step % cfg.eval_steps == 0) or step == cfg.max_steps)
        if evaluate_now:
            row.update(_validation(loop, evals))
        row["step_time"] = time.perf_counter() - started
        if dist_.is_main() and (step % cfg.logging_steps == 0 or evaluate_now or step == cfg.max_steps):
            log_metrics(out_dir, STAGE, step, sink=sink, **row)
        bar.set_postfix(reward=f"{row['reward']:.2f}", len=f"{row['completions/mean_length']:.0f}")
        if (cfg.save_steps and step % cfg.save_steps == 0) or step == cfg.max_steps:
            _save(loop, step, run.grpo_step(step))
            _prune_step_checkpoints(root, cfg.save_total_limit)
        if stop_after is not None and step >= stop_after and step < cfg.max_steps:
            bar.close()
            dist_.barrier()  # rank 0's files are complete before any rank goes on
            return {"step": step, "stopped": True}
    bar.close()
    model.eval()
    _save(loop, step, run.grpo_final)  # with the optimizer state: the analysis of the final model needs its next step
    dist_.barrier()
    return {"step": step, "stopped": False, "final_dir": str(run.grpo_final)}


def _start(cfg: GRPOConfig, model, tokenizer, train_rows, out_dir: Path, root: Path, resume: bool, task) -> tuple[_Loop, int]:
    """Refuse to mix with another run's checkpoints, record the config, build the optimizer and
    the reference model, and resume the latest checkpoint when asked: the loop and its first step."""
    found = step_checkpoints(root)
    if found and not resume:
        raise UserError(f"{root} already holds GRPO checkpoints; pass resume to continue or choose another output dir")
    if dist_.is_main():
        Run(out_dir).record(STAGE, asdict(cfg))  # the reward and every knob, beside the SFT stage's
    # The reference is the model as handed in (the SFT checkpoint), before any resumed weights.
    ref_model = copy.deepcopy(model).eval() if cfg.beta else None
    if ref_model is not None:
        ref_model.requires_grad_(False)
    optimizer, scheduler = make_optimizer(model, cfg)
    step = 0
    if resume and found:
        step, latest = found[-1]
        state = ckpt_io.load_trainer_state(latest)
        ckpt_io.load_weights_into(model, latest)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    # Rows a killed run logged after its last checkpoint are redone now; keep them once
    # (a run that never reached a checkpoint redoes its step-0 evaluation too).
    if dist_.is_main():
        drop_metrics_after(out_dir, STAGE, step if step else -1)
    first, stop = dist_.shard_bounds(cfg.prompts_per_step)  # this rank's queries of each step
    loop = _Loop(cfg, model, tokenizer, optimizer, scheduler, ref_model, train_rows,
                 [encode_prompt(tokenizer, r["prompt"]) for r in train_rows], stop_token_ids(model, tokenizer), first, stop, task)
    return loop, step


def _save(loop: _Loop, step: int, path: Path) -> None:
    """The model, tokenizer and the optimizer state the run resumes from (rank 0 writes)."""
    if not dist_.is_main():
        return
    cfg = asdict(loop.cfg)
    state = {"optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(), "step": step, "config": cfg,
             "param_names": ckpt_io.optimizer_param_names(loop.model, loop.optimizer)}
    ckpt_io.save_model_dir(path, loop.model, loop.tokenizer, {"grpo_config.json": cfg}, state)


def _prune_step_checkpoints(root: Path, keep: int) -> None:
    """Keep only the newest ``keep`` step checkpoints (0 keeps all)."""
    if keep and dist_.is_main():
        for _, old in step_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def _validation(loop: _Loop, evals: dict) -> dict:
    """Greedy answer and step accuracy on each validation split."""
    out = {}
    for name, rows in evals.items():
        scores = greedy_scores(loop.model, loop.tokenizer, rows, max_new_tokens=loop.cfg.max_completion_length, reward=loop.cfg.reward, task=loop.task)
        out[f"{name}_accuracy"], out[f"{name}_step_accuracy"] = scores["accuracy"], scores["step_accuracy"]
    return out


def _grpo_step(loop: _Loop, step: int) -> dict:
    """Sample this step's groups, score them, take the update; the step's metrics row."""
    cfg, G, P = loop.cfg, loop.cfg.num_generations, loop.cfg.prompts_per_step
    started = time.perf_counter()
    rows = query_order(len(loop.train_rows), cfg.seed, step, P)[loop.first : loop.stop]
    batch_prompts = [loop.prompts[i] for i in rows for _ in range(G)]
    loop.model.eval()
    # Rollouts depend only on (seed, step), so a resumed run samples what it would have
    # (hash of an int tuple is not salted, so this is the same on every run).
    gen = torch.Generator().manual_seed(hash((cfg.seed, step)) % (2**63))
    ro = sample(
        loop.model, batch_prompts, max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
        top_p=cfg.top_p, eos_token_id=loop.tokenizer.eos_token_id, pad_token_id=loop.tokenizer.pad_token_id,
        stop_token_ids=loop.stops, generator=gen, rows_of=(loop.first * G, P * G),
    )
    generated = time.perf_counter()
    completions = ro.completions()
    batch = _scored_batch(loop, rows, completions, ro)
    advantages = grpo_advantages(batch["rewards"], G, cfg.scale_rewards, cfg.std)
    update_started = time.perf_counter()
    stats = _optimise(cfg, loop.model, loop.optimizer, batch_prompts, completions, advantages[loop.first * G : loop.stop * G],
                      loop.tokenizer.pad_token_id, loop.ref_model, batch_rollouts=P * G, batch_tokens=float(batch["lengths"].sum()))
    # The policy's entropy at each sampled token (temperature applied), as the sampler saw it.
    stats["entropy"] = float(batch["entropy"].sum() / batch["lengths"].sum().clamp(min=1))
    updated = time.perf_counter()
    # Where a step's time goes: sampling the rollouts, and the policy update (all
    # num_iterations passes); the rest is scoring, logging and validation.
    timings = {"time/generate": generated - started, "time/update": updated - update_started}
    return _step_row(batch, stats, loop.scheduler.get_last_lr()[0], G, P) | timings


_BATCH_COLUMNS = ("correct", "rewards", "verified", "right_answer", "behaviours", "lengths", "finished", "entropy")


def _scored_batch(loop: _Loop, rows: list[int], completions, ro) -> dict[str, torch.Tensor]:
    """Each rollout's correctness, reward, step check, answer check, use of injected behaviours,
    length, finish and summed entropy, then its lines of each kind of behaviour the task counts
    (``behaviours/KIND``), for the whole batch: every rank sees every rollout's numbers, so
    advantages and metrics are the whole batch's."""
    cfg, G = loop.cfg, loop.cfg.num_generations
    texts = [decode_completion(loop.tokenizer, c) for c in completions]
    group_prompts = [loop.train_rows[i]["prompt"] for i in rows for _ in range(G)]
    group_answers = [loop.train_rows[i]["answer"] for i in rows for _ in range(G)]
    correct, rewards = reward_completions(texts, group_answers, cfg.format_reward, group_prompts, cfg.reward, loop.task)
    verified = [loop.task.check_steps(p, t).ok for p, t in zip(group_prompts, texts)]
    right_answer = reward_scores(accuracy_reward(cfg.reward), group_prompts, texts, group_answers)
    counts = [loop.task.count_behaviours(t) for t in texts]
    kinds = list(counts[0]) if counts else []  # the same kinds for every text of a task
    columns = (correct, rewards, torch.tensor(verified), torch.tensor(right_answer), torch.tensor([any(c.values()) for c in counts]),
               ro.lengths, ro.finished, ro.entropies.sum(1), *(torch.tensor([c[k] for c in counts]) for k in kinds))
    table = torch.stack([c.double().cpu() for c in columns], dim=1)
    gathered = dist_.gather_rows(table, [n * G for n in dist_.split_sizes(cfg.prompts_per_step)]).unbind(1)
    return dict(zip((*_BATCH_COLUMNS, *(f"behaviours/{k}" for k in kinds)), gathered))


def _step_row(batch: dict[str, torch.Tensor], stats: dict, lr: float, G: int, P: int) -> dict:
    """The metrics row of one step (TRL's names where TRL has one)."""
    rewards, lengths = batch["rewards"], batch["lengths"]
    per_query = batch["correct"].view(P, G)
    grad_norm = stats.pop("grad_norm")
    return {
        "reward": float(rewards.mean()),
        "reward_std": float(rewards.view(P, G).std(dim=1, unbiased=False).mean()),
        "frac_reward_zero_std": float((rewards.view(P, G).std(dim=1) == 0).double().mean()),
        "accuracy": float(batch["right_answer"].mean()),
        "step_accuracy": float(batch["verified"].mean()),
        # the share of rollouts with an injected behaviour (eval's name): does RL keep them?
        "behaviours/frac": float(batch["behaviours"].mean()),
        **{name: float(lines.mean()) for name, lines in batch.items() if name.startswith("behaviours/")},  # per rollout
        "alpha_hist": [int(v) for v in torch.bincount(per_query.sum(1).long(), minlength=G + 1)],
        "completions/mean_length": float(lengths.mean()),
        # the longest rollout sets how long generation and the padded update take
        "completions/max_length": float(lengths.max()),
        "completions/min_length": float(lengths.min()),
        "completions/clipped_ratio": float(1 - batch["finished"].mean()),
        "learning_rate": lr,
        "grad_norm": grad_norm,
        **stats,
    }


def _optimise(cfg: GRPOConfig, model, optimizer, prompts, completions, advantages, pad_id: int, ref_model,
              batch_rollouts: int | None = None, batch_tokens: float | None = None) -> dict:
    """``num_iterations`` passes of the clipped surrogate over the rollouts, in micro-batches
    whose losses are weighted so that their sum is the loss of the whole batch. Rollouts are
    sorted by length before they are split, so each micro-batch is padded only to its own
    longest row (a few runaway rollouts would otherwise pad the whole batch). Without a KL term a
    rollout whose advantage is 0 adds exactly nothing to the loss or its gradient, so it is not
    run at all (in most steps that is the larger part of the batch). Under torchrun these are this
    rank's rollouts of a batch of ``batch_rollouts`` with ``batch_tokens`` completion tokens, and
    the gradients are summed over ranks before clipping."""
    B = batch_rollouts or len(prompts)
    total_tokens = (batch_tokens if batch_rollouts else float(sum(len(c) for c in completions))) or 1.0
    active = [i for i in range(len(prompts)) if ref_model is not None or float(advantages[i]) != 0.0]
    chunks = [[active[j] for j in c]
              for c in chunks_by_length([len(prompts[i]) + len(completions[i]) for i in active], cfg.micro_batch_size)]
    device = model_device(model)
    batches = [batch_to(rollout_batch([prompts[i] for i in c], [completions[i] for i in c], pad_id), device) for c in chunks]
    chunk_adv = [advantages[torch.tensor(c)].to(device) for c in chunks]
    with torch.no_grad():
        old = [sequence_logprobs(model, b, cfg.temperature) for b in batches] if cfg.num_iterations > 1 else None
        ref = [sequence_logprobs(ref_model, b, cfg.temperature) for b in batches] if ref_model is not None else None
    model.train()
    sums = Counter()
    for _ in range(cfg.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        for k, mb in enumerate(batches):
            logps = sequence_logprobs(model, mb, cfg.temperature)
            m = mb["completion_mask"]
            loss, st = grpo_loss(
                logps, old[k] if old else logps.detach(), chunk_adv[k].to(logps.dtype), m,
                loss_type=cfg.loss_type, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
                beta=cfg.beta, ref_logps=ref[k] if ref else None, max_completion_length=cfg.max_completion_length,
            )
            weight = float(m.sum()) / total_tokens if cfg.loss_type == "dapo" else len(chunks[k]) / B
            (loss * weight).backward()
            tokens = float(m.sum())
            sums["loss"] += float(loss.detach()) * weight
            sums["clip_ratio"] += st["clip_ratio"] * tokens
            sums["kl"] += st.get("kl", 0.0) * tokens
        # A zero gradient, not a missing one: AdamW still decays its moments and moves on them.
        params = [p for p in model.parameters() if p.requires_grad]
        dist_.all_reduce_grads(params)
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm else float("inf"))
        optimizer.step()
    n = cfg.num_iterations
    sums["loss"], sums["clip_ratio"], sums["kl"] = dist_.sum_across_ranks([sums["loss"], sums["clip_ratio"], sums["kl"]])
    out = {
        "loss": sums["loss"] / n,
        "clip_ratio": sums["clip_ratio"] / (n * total_tokens),
        "grad_norm": float(norm),
    }
    if cfg.beta:
        out["kl"] = sums["kl"] / (n * total_tokens)
    return out
