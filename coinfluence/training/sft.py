"""Supervised finetuning on (prompt, completion) rows, resumable and exact.

Data order is a pure function of ``(seed, position)``: each epoch's batches come from a
seeded shuffle, so a resumed run only needs the number of micro-batches already consumed.
Batches are length-bucketed (sort within shuffled chunks, fill up to a token budget that
counts padding), so little CPU time is spent on pad tokens.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from coinfluence import distributed as dist_
from coinfluence.device import model_device
from coinfluence.errors import UserError
from coinfluence.models.format import encode_example
from coinfluence.run import Run, sft_checkpoint_name
from coinfluence.training import checkpoint as ckpt_io
from coinfluence.training.evaluate import greedy_scores
from coinfluence.training.metrics import drop_metrics_after, log_metrics
from coinfluence.training.objectives import batch_to

IGNORE_INDEX = -100
STAGE = "sft"


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class SFTConfig:
    learning_rate: float = _opt(3e-3, "Peak AdamW learning rate.")
    lr_scheduler_type: str = _opt("cosine", "Decay after warmup: cosine, linear or constant.")
    warmup_ratio: float = _opt(0.05, "Fraction of max_steps spent warming the learning rate up linearly from 0.")
    min_lr_ratio: float = _opt(0.0, "Final learning rate as a fraction of the peak (cosine and linear).")
    weight_decay: float = _opt(0.0, "AdamW decoupled weight decay.")
    adam_beta1: float = _opt(0.9, "AdamW beta1.")
    adam_beta2: float = _opt(0.98, "AdamW beta2.")
    adam_epsilon: float = _opt(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _opt(1.0, "Clip the global gradient norm to this value (0 disables clipping).")
    max_steps: int = _opt(0, "Optimizer steps to train for (0: as many as num_train_epochs passes take).")
    num_train_epochs: float = _opt(12.0, "Passes over the training rows when max_steps is 0. Batches hold a token budget, "
                                         "so data with longer completions needs more steps for the same epochs; this "
                                         "matches variants by epochs instead of by steps.")
    tokens_per_batch: int = _opt(2048, "Token budget of one micro-batch, padding included.")
    gradient_accumulation_steps: int = _opt(1, "Micro-batches per optimizer step.")
    max_length: int = _opt(1024, "Truncate longer examples to this many tokens.")
    group_by_length: bool = _opt(True, "Bucket examples of similar length into a batch (False: random order, padded to the batch max).")
    bucket_chunk_size: int = _opt(256, "Examples per shuffled chunk that is sorted by length before batching.")
    completion_only_loss: bool = _opt(True, "Loss on completion tokens only (False: on prompt tokens too).")
    logging_steps: int = _opt(10, "Append a metrics row every this many steps.")
    eval_steps: int = _opt(100, "Greedy validation accuracy every this many steps (0: only at the end).")
    eval_size: int = _opt(64, "Validation rows used for the periodic accuracy.")
    max_new_tokens: int = _opt(0, "Generation limit for validation (0: longest training completion + 32).")
    save_steps: int = _opt(200, "Write a resumable checkpoint every this many steps (0: only at the end).")
    save_total_limit: int = _opt(2, "Keep only this many resumable checkpoints (0 keeps all).")
    seed: int = _opt(0, "Seed of the data order and of every random draw in training.")


# Fields that decide the trajectory: a resumed run must agree on all of them.
TRAJECTORY_FIELDS = (
    "learning_rate", "lr_scheduler_type", "warmup_ratio", "min_lr_ratio", "weight_decay", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "max_steps", "num_train_epochs", "tokens_per_batch", "gradient_accumulation_steps", "max_length",
    "group_by_length", "bucket_chunk_size", "completion_only_loss", "seed",
)


def validate_config(cfg: SFTConfig) -> None:
    positive = ("learning_rate", "tokens_per_batch", "gradient_accumulation_steps", "max_length", "bucket_chunk_size", "logging_steps")
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise UserError(f"sft option {name} must be > 0, got {getattr(cfg, name)}")
    for name in ("max_steps", "eval_steps", "eval_size", "save_steps", "save_total_limit", "max_new_tokens", "weight_decay", "max_grad_norm", "min_lr_ratio"):
        if getattr(cfg, name) < 0:
            raise UserError(f"sft option {name} must be >= 0, got {getattr(cfg, name)}")
    if not 0 <= cfg.num_train_epochs < 1e6:
        raise UserError(f"sft option num_train_epochs must be in [0, 1e6), got {cfg.num_train_epochs}")
    if not cfg.max_steps and not cfg.num_train_epochs:
        raise UserError("sft options max_steps and num_train_epochs are both 0: set one of them")
    if not 0 <= cfg.warmup_ratio < 1:
        raise UserError(f"sft option warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.lr_scheduler_type not in ("cosine", "linear", "constant"):
        raise UserError(f"sft option lr_scheduler_type must be cosine, linear or constant, got {cfg.lr_scheduler_type!r}")
    dist_.require_at_least_one_each(cfg.gradient_accumulation_steps, "sft option gradient_accumulation_steps (micro-batches per step, dealt across ranks)")


# ---------------------------------------------------------------- examples and batches


def encode_rows(tokenizer, rows: Sequence[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, completion_mask)`` per row, truncated on the right to ``max_length``."""
    out = []
    for row in rows:
        ids, mask = encode_example(tokenizer, row["prompt"], row["completion"])
        out.append((ids[:max_length], mask[:max_length]))
    return out


def pack_by_budget(order: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive runs of ``order`` whose padded size (count × longest) fits ``budget``.

    An example longer than the budget gets a batch of its own.
    """
    batches, current, longest = [], [], 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and new_longest * (len(current) + 1) > budget:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def epoch_batches(lengths: Sequence[int], cfg: SFTConfig, epoch: int) -> list[list[int]]:
    """The micro-batches of one epoch, a pure function of (seed, epoch)."""
    rng = random.Random(cfg.seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not cfg.group_by_length:
        return pack_by_budget(order, lengths, cfg.tokens_per_batch)
    batches = []
    for start in range(0, len(order), cfg.bucket_chunk_size):
        chunk = sorted(order[start : start + cfg.bucket_chunk_size], key=lambda i: lengths[i])
        batches += pack_by_budget(chunk, lengths, cfg.tokens_per_batch)
    rng.shuffle(batches)  # so each step is not a run of only short (or only long) examples
    return batches


def steps_for_epochs(lengths: Sequence[int], cfg: SFTConfig) -> int:
    """Optimizer steps that make ``cfg.num_train_epochs`` passes over examples of these lengths."""
    whole, fraction = divmod(cfg.num_train_epochs, 1.0)
    micro = sum(len(epoch_batches(lengths, cfg, e)) for e in range(int(whole)))
    if fraction:
        micro += math.ceil(fraction * len(epoch_batches(lengths, cfg, int(whole))))
    return max(1, math.ceil(micro / cfg.gradient_accumulation_steps))


def micro_batches_from(lengths: Sequence[int], cfg: SFTConfig, position: int) -> Iterator[tuple[float, list[int]]]:
    """Endless ``(epoch progress, batch)`` stream starting at micro-batch number ``position``."""
    epoch, skipped = 0, 0
    while True:
        batches = epoch_batches(lengths, cfg, epoch)
        for k, batch in enumerate(batches):
            if skipped + k >= position:
                yield epoch + (k + 1) / len(batches), batch
        skipped += len(batches)
        epoch += 1


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int, completion_only_loss: bool) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on pad, and on the prompt
    when ``completion_only_loss``)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        n = len(ids)
        input_ids[row, :n] = torch.tensor(ids)
        attention[row, :n] = 1
        target = torch.tensor(ids)
        if completion_only_loss:
            target[torch.tensor(mask) == 0] = IGNORE_INDEX
        labels[row, :n] = target
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def summed_token_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropies over positions whose label is not -100, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())


# ---------------------------------------------------------------- optimisation


def lr_factor(step: int, cfg: SFTConfig) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    warmup = math.ceil(cfg.warmup_ratio * cfg.max_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.lr_scheduler_type == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.lr_scheduler_type == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


def decay_groups(params: list) -> tuple[list, list]:
    """``params`` (tensors, or ``(name, tensor)`` pairs) split into 2-D and larger, then 1-D:
    the optimizer's two groups, in its order."""
    dims = [(p[1] if isinstance(p, tuple) else p).ndim for p in params]
    return [p for p, d in zip(params, dims) if d >= 2], [p for p, d in zip(params, dims) if d < 2]


def make_optimizer(model, cfg: SFTConfig):
    # No weight decay on norms and biases (1-D tensors), the usual transformer recipe.
    decayed, plain = decay_groups([p for p in model.parameters() if p.requires_grad])
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    return optimizer, scheduler


def clip_and_measure(model, max_norm: float) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


# ---------------------------------------------------------------- the loop


def auto_max_new_tokens(tokenizer, rows: Sequence[dict]) -> int:
    longest = max((len(tokenizer.encode(r["completion"], add_special_tokens=False)) for r in rows), default=0)
    return longest + 32


def _check_resumable(state: dict, cfg: SFTConfig, ckpt: Path) -> None:
    saved = state.get("config", {})
    differing = [name for name in TRAJECTORY_FIELDS if name in saved and saved[name] != getattr(cfg, name)]
    if differing:
        detail = ", ".join(f"{n}={saved[n]!r} (now {getattr(cfg, n)!r})" for n in differing)
        raise UserError(f"cannot resume from {ckpt}: options differ from the saved run: {detail}")


def optimizer_step(model, optimizer, scheduler, tokenizer, examples, micro: list, cfg: SFTConfig, device) -> tuple[float, float, float, int]:
    """One SFT optimizer step over the micro-batches ``micro``; returns (loss, pre-clip gradient
    norm, learning rate used, real tokens). Under torchrun each rank takes its share of the
    micro-batches (the global batch is unchanged)."""
    batches = [batch_to(collate([examples[i] for i in batch], tokenizer.pad_token_id, cfg.completion_only_loss), device)
               for _, batch in dist_.shard(micro)]
    # Mean over every target token of the optimizer step, not a mean of per-batch means.
    targets, real_tokens = dist_.sum_across_ranks([sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches),
                                                    sum(int(b["attention_mask"].sum()) for b in batches)])
    targets, real_tokens = max(1, int(targets)), int(real_tokens)
    step_loss = 0.0
    for batch in batches:
        loss_sum, _ = summed_token_loss(model, batch)
        (loss_sum / targets).backward()
        step_loss += float(loss_sum.detach()) / targets
    dist_.all_reduce_grads(model.parameters())
    step_loss = dist_.sum_across_ranks([step_loss])[0]
    grad_norm = clip_and_measure(model, cfg.max_grad_norm)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, grad_norm, lr, real_tokens


@dataclass
class _SFTRun:
    """One SFT run's model, optimizer and where it is: optimizer ``step``, micro-batch
    ``position`` in the data stream and training tokens seen (what a checkpoint saves)."""
    cfg: SFTConfig
    model: object
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    out_dir: Path
    step: int = 0
    position: int = 0
    num_tokens: int = 0


def train_sft(
    cfg: SFTConfig,
    model,
    tokenizer,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    out_dir: str | Path,
    resume: bool = False,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    sink=None,  # metrics.metric_sink: each logged row also goes there (TensorBoard)
    task=None,  # the Task (or its name) whose checker verifies validation steps; None: the default task
) -> dict:
    """Train ``model`` in place; write OUT/sft/ (final), OUT/sft-checkpoints/, OUT/metrics.jsonl.

    ``resume=True`` continues from the newest checkpoint in OUT/sft-checkpoints (or starts fresh
    when there is none) and ends with the same weights as an uninterrupted run.
    ``stop_after`` ends the loop after that optimizer step without the final save, as a kill
    would (for tests and time-boxed runs). Returns a summary dict.
    """
    validate_config(cfg)
    if not train_rows:
        raise UserError("no training rows")
    examples = encode_rows(tokenizer, train_rows, cfg.max_length)
    lengths = [len(ids) for ids, _ in examples]
    run = _start(cfg, model, tokenizer, lengths, Path(out_dir), resume)
    cfg = run.cfg
    max_new_tokens = cfg.max_new_tokens or auto_max_new_tokens(tokenizer, train_rows)
    eval_rows = list(val_rows)[: cfg.eval_size] if dist_.is_main() else []
    stream = micro_batches_from(lengths, cfg, run.position)
    device = model_device(model)
    bar = tqdm(total=cfg.max_steps, initial=run.step, desc="sft", file=sys.stderr, disable=not progress or not dist_.is_main(), dynamic_ncols=True)
    window = _LogWindow()
    last_val = None
    model.train()
    while run.step < cfg.max_steps:
        micro, lr, grad_norm = _advance(run, stream, examples, device, window)
        bar.update(1)
        step = run.step
        evaluate_now = bool(eval_rows) and ((cfg.eval_steps and step % cfg.eval_steps == 0) or step == cfg.max_steps)
        if evaluate_now:
            last_val = greedy_scores(model, tokenizer, eval_rows, max_new_tokens=max_new_tokens, task=task)
            model.train()
        if dist_.is_main() and (step % cfg.logging_steps == 0 or evaluate_now or step == cfg.max_steps):
            row = window.row(micro[-1][0], lr, grad_norm, run.num_tokens, last_val if evaluate_now else None)
            log_metrics(run.out_dir, STAGE, step, sink=sink, **row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_second']:.0f}", **({"val": f"{last_val['accuracy']:.2f}"} if evaluate_now else {}))
            window = _LogWindow()
        if (cfg.save_steps and step % cfg.save_steps == 0) or step == cfg.max_steps:
            _save_resumable(run)
        if stop_after is not None and step >= stop_after and step < cfg.max_steps:
            bar.close()
            dist_.barrier()  # rank 0's files are complete before any rank goes on
            return {"step": step, "stopped": True, "num_tokens": run.num_tokens}
    bar.close()
    return {**_save_final(run), "val_accuracy": last_val["accuracy"] if last_val else None}


def _advance(run: _SFTRun, stream, examples, device, window: "_LogWindow") -> tuple[list, float, float]:
    """One optimizer step over the stream's next micro-batches; moves the run's step, stream
    position and token count on, and adds the step to ``window``. Returns (micro-batches, lr, grad norm)."""
    started = time.perf_counter()
    micro = [next(stream) for _ in range(run.cfg.gradient_accumulation_steps)]
    step_loss, grad_norm, lr, real_tokens = optimizer_step(run.model, run.optimizer, run.scheduler, run.tokenizer,
                                                           examples, micro, run.cfg, device)
    run.step, run.position, run.num_tokens = run.step + 1, run.position + len(micro), run.num_tokens + real_tokens
    window.add(step_loss, real_tokens, time.perf_counter() - started)
    return micro, lr, grad_norm


def _start(cfg: SFTConfig, model, tokenizer, lengths: list[int], out_dir: Path, resume: bool) -> _SFTRun:
    """Fix the run's length in steps, refuse to mix with another run's checkpoints, record the
    config, build the optimizer, and resume the latest checkpoint (or seed a fresh run)."""
    ckpt_root = Run(out_dir).sft_checkpoints
    if cfg.max_steps:
        cfg = replace(cfg, num_train_epochs=0.0)  # a step count given outright: record no epochs beside it
    else:
        cfg = replace(cfg, max_steps=steps_for_epochs(lengths, cfg))
    latest = ckpt_io.latest_checkpoint(ckpt_root) if resume else None
    state = ckpt_io.load_trainer_state(latest) if latest else None
    if state:
        _check_resumable(state, cfg, latest)
    elif not resume and ckpt_io.list_checkpoints(ckpt_root):
        raise UserError(f"{out_dir} already holds SFT checkpoints; pass resume to continue or choose another output dir")
    if dist_.is_main():
        Run(out_dir).record(STAGE, asdict(cfg))
    run = _SFTRun(cfg, model, tokenizer, *make_optimizer(model, cfg), out_dir)
    if state:
        ckpt_io.load_weights_into(model, latest)
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        ckpt_io.restore_rng_states(state["rng"])
        run.step, run.position, run.num_tokens = state["step"], state["position"], state["num_tokens"]
    else:
        torch.manual_seed(cfg.seed)
    if resume and dist_.is_main():  # rows a killed run logged after its last checkpoint (all before the first) are redone
        drop_metrics_after(out_dir, STAGE, run.step)
    return run


@dataclass
class _LogWindow:
    """Loss, steps, tokens and seconds since the last logged row."""
    loss: float = 0.0
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, loss: float, tokens: int, seconds: float) -> None:
        self.loss += loss
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds

    def row(self, epoch: float, lr: float, grad_norm: float, num_tokens: int, val: dict | None) -> dict:
        row = {"epoch": round(epoch, 4), "loss": self.loss / self.steps, "lr": lr, "grad_norm": grad_norm,
               "tokens_per_second": self.tokens / max(self.seconds, 1e-9), "num_tokens": num_tokens}
        if val is not None:
            row["val_accuracy"] = val["accuracy"]
            row["val_step_accuracy"] = val["step_accuracy"]
        return row


def _save_resumable(run: _SFTRun) -> None:
    """A checkpoint in OUT/sft-checkpoints that resumes to the same weights (rank 0 writes)."""
    if not dist_.is_main():
        return
    trainer_state = {
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "rng": ckpt_io.rng_states(),
        "step": run.step, "position": run.position, "num_tokens": run.num_tokens, "config": asdict(run.cfg),
        "param_names": ckpt_io.optimizer_param_names(run.model, run.optimizer),
    }
    ckpt_root = Run(run.out_dir).sft_checkpoints
    ckpt_io.save_model_dir(ckpt_root / sft_checkpoint_name(run.step), run.model, run.tokenizer,
                           {"sft_config.json": asdict(run.cfg)}, trainer_state)
    ckpt_io.prune_checkpoints(ckpt_root, run.cfg.save_total_limit)


def _save_final(run: _SFTRun) -> dict:
    """OUT/sft, the clean final model (no optimizer state), and the run's summary."""
    run.model.eval()
    final_dir = Run(run.out_dir).sft
    if dist_.is_main():
        ckpt_io.save_model_dir(final_dir, run.model, run.tokenizer, {"sft_config.json": asdict(run.cfg)})
    dist_.barrier()
    return {"step": run.step, "stopped": False, "final_dir": str(final_dir), "num_tokens": run.num_tokens}
