"""Per-rollout gradient features ``g(q,o) = ∇_θ ℓ(q,o)`` (docs/maths.md, "Per-rollout features").

``ℓ`` is the normalised completion log-probability of
:func:`coinfluence.training.objectives.normalize_logprob`, at the sampling temperature, so
the analysis differentiates exactly the quantity the GRPO trainer does.

Two ways to get the same numbers:

- :func:`features_vmap`: ``torch.func.vmap(grad(ℓ))`` over chunks of rollouts. Rows are
  right-padded and *no* attention mask is passed: attention is causal, so padding after a
  row's last token cannot change the log-probs of its real tokens, and the completion mask
  zeroes the padded positions. That keeps the forward free of data-dependent branches, which
  vmap needs.
- :func:`features_loop`: one forward and backward per rollout, unpadded — the reference.

Both can sketch the gradient with a seeded Gaussian projection (:func:`project`) and scale
it by an Adam preconditioner (:func:`adam_preconditioner`) first.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from coinfluence.device import model_device
from coinfluence.errors import UserError
from coinfluence.training.checkpoint import TRAINER_STATE, load_trainer_state
from coinfluence.training.objectives import normalize_logprob, rollout_batch, token_logprobs
from coinfluence.training.rollout import chunks_by_length, eval_mode

# Gaussian sketch blocks hold at most this many entries (rows × d), i.e. 16 MiB in float32.
PROJECTION_BLOCK_ELEMENTS = 1 << 22
# Memory that projection_cache may spend on keeping sketch blocks (P·d·4 bytes hold all of them:
# 1.1 GiB for the tiny model at d = 256).
PROJECTION_CACHE_MB = 2048


# ----------------------------------------------------------------------------- parameters


def select_params(model, pattern: str | None = None) -> dict[str, torch.Tensor]:
    """Trainable parameters whose name matches ``pattern`` (``re.search``; all when None).

    ``named_parameters`` lists a tied weight once, under its first name, so a tied embedding
    and output head are one feature block, as they are one tensor to the optimiser.
    """
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as err:
        raise UserError(f"--params is not a valid regular expression: {err}") from None
    chosen = {n: p for n, p in model.named_parameters() if p.requires_grad and (regex is None or regex.search(n))}
    if not chosen:
        raise UserError(f"--params {pattern!r} matches no parameter of the model")
    return chosen


@contextlib.contextmanager
def grad_only_for(model, params: dict[str, torch.Tensor]):
    """Inside the block autograd tracks only ``params``: the other weights act as constants, so a
    forward saves no activations below the first selected layer and a backward stops there (with
    ``--params`` on the last blocks, memory and time of the gradients shrink with the depth cut)."""
    chosen = {id(p) for p in params.values()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def num_features(params: dict[str, torch.Tensor]) -> int:
    return sum(p.numel() for p in params.values())


# ----------------------------------------------------------------------------- ℓ


def rollout_rows(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int):
    """Right-padded ids and the completion mask of ``objectives.rollout_batch`` (no attention
    mask is needed: attention is causal, so trailing padding never reaches real tokens)."""
    batch = rollout_batch(prompts, completions, pad_id)
    return batch["input_ids"], batch["completion_mask"]


def row_lengths(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> list[int]:
    """Tokens in each ``prompt + completion`` row (what a chunk of rows pads to)."""
    return [len(p) + len(c) for p, c in zip(prompts, completions)]


def rollout_rows_on(model, prompts, completions, pad_id: int):
    """:func:`rollout_rows` on the model's device."""
    device = model_device(model)
    return tuple(t.to(device) for t in rollout_rows(prompts, completions, pad_id))


def row_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, temperature: float,
                 params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs ``[B, L−1]`` of right-padded ``ids [B, L]`` (with ``params`` swapped
    into ``model`` when given) and the completion ``mask`` in their dtype."""
    if params is None:
        out = model(input_ids=ids)
    else:  # an explicit all-ones mask (the same causal attention): without one, GPT-2 style
        # models check the ids for padding, data-dependent control flow that vmap cannot trace
        out = functional_call(model, params, (ids,), {"attention_mask": torch.ones_like(ids)})
    logps = token_logprobs(out.logits[:, :-1], ids[:, 1:], temperature)
    return logps, mask.to(logps.dtype)


def ell_rows(model, ids: torch.Tensor, mask: torch.Tensor, *, normalization: str, max_length: int | None,
             temperature: float, params: dict | None = None) -> torch.Tensor:
    """``ℓ`` of each row of right-padded ``ids [B, L]`` (docs/maths.md, "Log-probability normalisation ℓ")."""
    logps, m = row_logprobs(model, ids, mask, temperature, params)
    return normalize_logprob(logps, m, normalization, max_length)


# ----------------------------------------------------------------------------- preconditioner


def find_optimizer_state(ckpt: str | Path) -> Path | None:
    """``CKPT/trainer_state.pt``, or None: then the update is a fresh optimizer's, as when GRPO
    starts from an SFT model (``RUN/sft`` holds no optimizer state on purpose)."""
    path = Path(ckpt) / TRAINER_STATE
    return path if path.exists() else None


def state_names(model, saved: dict, trainer_state: dict) -> dict[int, str]:
    """Optimizer state index -> parameter name, through the optimizer's own ``param_groups``.

    Indices number the tensors of the groups in group order, which is not ``named_parameters``
    order once there are several groups (SFT puts 2-D tensors first). Uses the names the trainer
    saved beside the state; for a checkpoint without them, the one grouping among the trainers'
    (one group; SFT's decay groups) whose group sizes and tensor shapes all match.
    """
    from coinfluence.training.sft import decay_groups

    sizes = [len(g["params"]) for g in saved.get("param_groups", [])]
    indices = [i for g in saved.get("param_groups", []) for i in g["params"]]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if "param_names" in trainer_state:
        candidates = [trainer_state["param_names"]]
    else:
        candidates = [[[n for n, _ in named]], [[n for n, p in group] for group in decay_groups(named)]]
    shapes = dict(named)
    for groups in candidates:
        flat_names = [n for g in groups for n in g]
        if [len(g) for g in groups] != sizes or any(n not in shapes for n in flat_names):
            continue
        mapping = dict(zip(indices, flat_names))
        state = saved.get("state", {})
        if all(i not in state or state[i]["exp_avg_sq"].shape == shapes[n].shape for i, n in mapping.items()):
            return mapping
    raise UserError("cannot tell which parameter each optimizer state belongs to: the groups match neither the "
                    "saved parameter names nor a trainer's grouping of this model")


def saved_adam_state(model, ckpt: str | Path, params: dict[str, torch.Tensor]) -> dict[str, dict] | None:
    """The checkpoint's AdamW state of each selected parameter (moments, step and its group's
    betas, eps, weight_decay), or None when the checkpoint saved no optimizer state or one that
    never stepped."""
    path = find_optimizer_state(ckpt)
    if path is None:
        return None
    try:
        trainer_state = load_trainer_state(path.parent)
        saved = trainer_state["optimizer"]
    except UserError:
        raise  # already one line (e.g. a state that would run code when loaded)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a bad checkpoint to the user
        raise UserError(f"cannot read the optimizer state in {path}: {type(err).__name__}") from None
    if not saved.get("state"):
        return None  # an optimizer that never stepped is a fresh one
    names = state_names(model, saved, trainer_state)
    groups = {i: g for g in saved.get("param_groups", []) for i in g["params"]}
    out = {}
    for idx, name in names.items():
        if name not in params:
            continue
        state = saved.get("state", {}).get(idx)
        if state is None or "exp_avg_sq" not in state:
            raise UserError(f"the optimizer state in {path} has no second moment for parameter {name}")
        g = groups[idx]
        out[name] = {"exp_avg": state["exp_avg"], "exp_avg_sq": state["exp_avg_sq"], "step": float(state.get("step", 0)),
                     "betas": tuple(g.get("betas", (0.9, 0.999))), "eps": g.get("eps", 1e-8),
                     "weight_decay": g.get("weight_decay", 0.0)}
    missing = [n for n in params if n not in out]
    if missing:
        raise UserError(f"the optimizer state in {path} has no entry for parameter {missing[0]}")
    return out


def adam_preconditioner(model, ckpt: str | Path, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Per-parameter ``(√v̂ + eps)^(-1/2)``, so that ``⟨Sg', Sg⟩ = ⟨g', D g⟩`` with
    ``D = 1/(√v̂ + eps)``: the metric of the step AdamW takes from its saved second moment
    (momentum aside). None (the identity) for a checkpoint without optimizer state."""
    state = saved_adam_state(model, ckpt, params)
    return None if state is None else preconditioner_scales(state, params)


def preconditioner_scales(state: dict[str, dict], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    scales = {}
    for name, st in state.items():
        v, step, beta2 = st["exp_avg_sq"].to(torch.float64), st["step"], st["betas"][1]
        v_hat = v / (1 - beta2**step) if step > 0 else v
        scales[name] = (v_hat.sqrt() + st["eps"]).rsqrt().to(params[name].device, params[name].dtype)
    return scales


# ----------------------------------------------------------------------------- projection


def stream_seed(*key) -> int:
    """A 63-bit generator seed from the whole of ``key`` (sha256 of its parts joined by ':'):
    different keys, e.g. (seed, purpose), give unrelated streams for any seed."""
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _block_generator(seed: int, name: str, block: int, device="cpu") -> torch.Generator:
    # Keyed by parameter *name* and row block: the sketch of a tensor does not depend on which
    # other tensors were selected, nor on the order rollouts arrive in.
    return torch.Generator(device=device).manual_seed(stream_seed(seed, name, block))


_block_cache: dict | None = None  # set inside ``projection_cache``: {"blocks": {key: R}, "free": bytes}


@contextlib.contextmanager
def projection_cache(budget_mb: float = PROJECTION_CACHE_MB):
    """Inside the block, each sketch block is drawn once and kept while the kept blocks fit in
    ``budget_mb``; the rest are drawn again on every use. A kept block equals a redrawn one, so
    results do not change, but a CPU draws Gaussians about five times slower than it multiplies
    them, so the blocks, not the products, dominated a sketch that redrew them every time.
    Nested blocks share the outermost cache, which is freed when it exits."""
    global _block_cache
    if _block_cache is not None:
        yield
        return
    _block_cache = {"blocks": {}, "free": int(budget_mb * 2**20)}
    try:
        yield
    finally:
        _block_cache = None


def projection_blocks(name: str, numel: int, dim: int, seed: int, device="cpu"):
    """Yield ``(start, stop, R)`` with ``R [stop-start, dim]`` of i.i.d. N(0, 1/d) entries: the
    rows of the sketch for flat positions ``start:stop`` of parameter ``name``. Drawn on
    ``device`` (a sketch of a large model is too many draws for the CPU), so one seed gives one
    sketch per device type: CPU and GPU sketches are different draws of the same distribution.
    ``R`` may be a kept block (see :func:`projection_cache`): read it, never write to it."""
    rows = max(1, PROJECTION_BLOCK_ELEMENTS // dim)
    for block, start in enumerate(range(0, numel, rows)):
        stop = min(numel, start + rows)
        key = (seed, name, block, dim, str(device))
        r = _block_cache["blocks"].get(key) if _block_cache is not None else None
        if r is None:
            r = torch.randn(stop - start, dim, generator=_block_generator(seed, name, block, device), device=device)
            r.mul_(dim**-0.5)
            if _block_cache is not None and r.numel() * r.element_size() <= _block_cache["free"]:
                _block_cache["blocks"][key] = r  # first come, kept: with a cyclic order of use,
                _block_cache["free"] -= r.numel() * r.element_size()  # evicting would never hit
        yield start, stop, r


def project(grads: dict[str, torch.Tensor], dim: int, seed: int) -> torch.Tensor:
    """``P g`` for a chunk of flattened per-rollout gradients ``{name: [c, numel]}`` -> ``[c, dim]``.

    ``E⟨Pg, Pg'⟩ = ⟨g, g'⟩``. The P×d matrix is held only as far as a surrounding
    :func:`projection_cache` keeps it; otherwise each block is regenerated from its seed, so
    memory is O(c·d + block·d).
    """
    first = next(iter(grads.values()))
    out = torch.zeros(first.shape[0], dim, dtype=torch.float32, device=first.device)
    for name, g in grads.items():
        g = g.reshape(g.shape[0], -1)
        for start, stop, r in projection_blocks(name, g.shape[1], dim, seed, g.device):
            out.addmm_(g[:, start:stop].float(), r)
    return out


# ----------------------------------------------------------------------------- features


def finish(grads: dict[str, torch.Tensor], *, scales: dict | None, project_dim: int | None, seed: int) -> torch.Tensor:
    """Precondition, then sketch or flatten, a chunk of per-rollout gradients ``{name: [c, ...]}``."""
    if scales:
        grads = {n: g * scales[n] for n, g in grads.items()}
    if project_dim:
        return project(grads, project_dim, seed)
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)


def feature_rows(n: int, chunk: torch.Tensor, on_device: bool) -> torch.Tensor:
    """The ``[n, D]`` buffer per-rollout features collect in: host memory (N×D floats can exceed
    a GPU's), or with ``on_device`` the device they were made on, for a caller that reduces
    them there (the kernel) and copies back only the results."""
    return torch.empty(n, chunk.shape[1], dtype=chunk.dtype, device=chunk.device if on_device else "cpu")


def features_vmap(model, prompts, completions, pad_id: int, *, normalization: str = "seq-mean",
                  max_length: int | None = None, temperature: float = 1.0, params: dict | None = None,
                  chunk_size: int = 32, project_dim: int | None = None, seed: int = 0,
                  scales: dict | None = None, project_budget_mb: float = 256, progress: bool = False,
                  on_device: bool = False) -> torch.Tensor:
    """Features ``[N, D]`` (``D`` = selected parameter count, or ``project_dim``) by vmap,
    computed on the model's device and returned on the CPU (``on_device``: left there).

    Rollouts are taken in order of length so each chunk pads little; rows come back in input
    order. At most ``chunk_size × P`` gradient entries are alive at once.
    """
    params = params if params is not None else select_params(model)
    frozen = {n: p.detach() for n, p in params.items()}

    def one(p, ids, mask):
        return ell_rows(model, ids[None], mask[None], normalization=normalization, max_length=max_length,
                        temperature=temperature, params=p)[0]

    per_rollout = vmap(grad(one), in_dims=(None, 0, 0))
    n = len(prompts)
    # With a sketch, chunks are buffered up to ``project_budget_mb`` of gradients and projected
    # together: every projection regenerates the P×d Gaussian blocks, so fewer, larger
    # projections cost far less, and memory stays O(budget + N·d).
    per_row_bytes = num_features(params) * next(iter(frozen.values())).element_size()
    buffer_rows = max(chunk_size, int(project_budget_mb * 2**20 // per_row_bytes)) if project_dim else chunk_size
    out = None
    pending: list[tuple[list[int], dict]] = []

    def flush():
        nonlocal out
        if not pending:
            return
        idx = [i for ids_, _ in pending for i in ids_]
        grads = {name: torch.cat([g[name] for _, g in pending]) for name in frozen}
        pending.clear()
        chunk = finish(grads, scales=scales, project_dim=project_dim, seed=seed)
        if out is None:
            out = feature_rows(n, chunk, on_device)
        out[torch.tensor(idx)] = chunk.to(out.device)

    bar = tqdm(total=n, desc="features", file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=False)
    with eval_mode(model), bar:
        for idx in chunks_by_length(row_lengths(prompts, completions), chunk_size):
            ids, mask = rollout_rows_on(model, [prompts[i] for i in idx], [completions[i] for i in idx], pad_id)
            pending.append((idx, {k: v.detach() for k, v in per_rollout(frozen, ids, mask).items()}))
            if sum(len(i) for i, _ in pending) + chunk_size > buffer_rows:
                flush()
            bar.update(len(idx))
        flush()
    return out


def features_loop(model, prompts, completions, pad_id: int, *, normalization: str = "seq-mean",
                  max_length: int | None = None, temperature: float = 1.0, params: dict | None = None,
                  project_dim: int | None = None, seed: int = 0, scales: dict | None = None,
                  on_device: bool = False) -> torch.Tensor:
    """The reference: one unpadded forward and ``torch.autograd.grad`` per rollout (on the CPU,
    or with ``on_device`` on the model's device)."""
    params = params if params is not None else select_params(model)
    names, tensors = list(params), list(params.values())
    rows = []
    with eval_mode(model):
        for p, c in zip(prompts, completions):
            ids, mask = rollout_rows_on(model, [p], [c], pad_id)
            ell = ell_rows(model, ids, mask, normalization=normalization, max_length=max_length, temperature=temperature)[0]
            grads = torch.autograd.grad(ell, tensors, allow_unused=True)
            grads = {n: (g if g is not None else torch.zeros_like(t))[None] for n, g, t in zip(names, grads, tensors)}
            row = finish(grads, scales=scales, project_dim=project_dim, seed=seed)
            rows.append(row if on_device else row.cpu())
    return torch.cat(rows)
