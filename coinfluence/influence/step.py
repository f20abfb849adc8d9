"""Per-step influence ``ΔJ(q)`` of each training query on the target objective (docs/maths.md, "Per-step influence ΔJ").

Two routes to the same number:

- pairwise: ``delta_J = weight · co_influence`` with ``co_influence`` from the kernel
  (:mod:`coinfluence.influence.kernel`);
- aggregated ("cost structure"): ``u = (1/N') Σ_j A_j ∇ℓ_j`` from one backward over the
  target rollouts, ``∇J(q) = −∇ grpo_loss(group q)`` from one backward per group, and
  ``delta_J(q) = ⟨u, ∇J(q)⟩``. No per-rollout gradient is ever formed.

Both are per unit step size η. Advantages use the ``eps → 0`` limit, the one in which
``∇J(q) = weight·(ḡ⁺ − ḡ⁻)`` holds exactly, so the two routes agree to rounding.
"""

from __future__ import annotations

import sys
from typing import Sequence

import torch
from tqdm.auto import tqdm

from coinfluence.influence.features import rollout_rows_on
from coinfluence.training.objectives import LOSS_NORMALIZATION, group_weight, grpo_advantages, grpo_loss, normalize_logprob, token_logprobs

LOSS_TYPE_OF = {norm: loss for loss, norm in LOSS_NORMALIZATION.items()}


def weight(alpha, num_generations: int, scale_rewards: str = "group", std: str = "population") -> torch.Tensor:
    """``√(α(1−α))`` (and its variants): how much a group's ``ḡ⁺ − ḡ⁻`` enters its gradient."""
    return group_weight(alpha, num_generations, scale_rewards, std)


def delta_J(weights: torch.Tensor, co_influences: torch.Tensor) -> torch.Tensor:
    """``ΔJ(q) = weight(q)·co_influence(q)`` per unit η; exactly 0 for α ∈ {0, 1} (whose
    co-influence is undefined, NaN)."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    c = torch.as_tensor(co_influences, dtype=torch.float64)
    return torch.where(w > 0, w * torch.nan_to_num(c), torch.zeros_like(w))


def advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group", std: str = "population") -> torch.Tensor:
    return grpo_advantages(rewards.double(), num_generations, scale_rewards, std, eps=0.0)


def token_logps_rows(model, prompts, completions, pad_id: int, temperature: float):
    """Per-token log-probs ``[B, L−1]`` and completion mask of right-padded rows (no attention
    mask: causal attention makes trailing padding invisible to real tokens)."""
    ids, mask = rollout_rows_on(model, prompts, completions, pad_id)
    logits = model(input_ids=ids).logits[:, :-1]
    logps = token_logprobs(logits, ids[:, 1:], temperature)
    return logps, mask.to(logps.dtype)


def _grad(scalar: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(scalar, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)).detach() for (n, p), g in zip(params.items(), grads)}


def target_direction(model, params: dict, prompts: Sequence, completions: Sequence, target_advantages: torch.Tensor,
                     pad_id: int, *, normalization: str = "seq-mean", max_length: int | None = None,
                     temperature: float = 1.0, micro_batch: int = 64) -> dict[str, torch.Tensor]:
    """``u = (1/N') Σ_j A_j ∇ℓ_j`` over the target rollouts (micro-batched; the sum is one backward's)."""
    n = len(prompts)
    u = {name: torch.zeros_like(p) for name, p in params.items()}
    for s in range(0, n, micro_batch):
        sl = slice(s, min(n, s + micro_batch))
        logps, mask = token_logps_rows(model, prompts[sl], completions[sl], pad_id, temperature)
        ell = normalize_logprob(logps, mask, normalization, max_length)
        part = _grad((target_advantages[sl].to(ell.device, ell.dtype) * ell).sum() / n, params)
        for name in u:
            u[name] += part[name]
    return u


def objective_gradient(model, params: dict, prompts: Sequence, completions: Sequence, rewards: torch.Tensor, pad_id: int,
                       *, normalization: str = "seq-mean", max_length: int | None = None, temperature: float = 1.0,
                       scale_rewards: str = "group", std: str = "population") -> dict[str, torch.Tensor]:
    """``∇J(q) = −∇ grpo_loss`` of one group (on-policy, beta 0), ``= (1/G) Σ_i A_i ∇ℓ_i``.

    The loss type is the one whose per-rollout quantity is ``ℓ``. For ``token-sum`` that is
    dapo, whose division by the group's token count is a per-batch constant; it is multiplied
    back out so that ∇J is in the units of the kernel.
    """
    G = len(prompts)
    logps, mask = token_logps_rows(model, prompts, completions, pad_id, temperature)
    adv = advantages(rewards, G, scale_rewards, std).to(logps.device, logps.dtype)
    loss_type = LOSS_TYPE_OF[normalization]
    loss, _ = grpo_loss(logps, logps.detach(), adv, mask, loss_type=loss_type, beta=0.0, max_completion_length=max_length)
    if loss_type == "dapo":
        loss = loss * mask.sum() / G
    return {n: -g for n, g in _grad(loss, params).items()}


def inner(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], scales: dict | None = None) -> float:
    """``⟨a, D b⟩`` with ``D = scales²`` (the preconditioner; identity when None)."""
    total = torch.zeros((), dtype=torch.float64, device=next(iter(a.values())).device)
    for name, x in a.items():
        y = b[name].double()
        if scales:
            y = y * scales[name].double() ** 2
        total += (x.double() * y).sum()
    return float(total)


def delta_J_aggregated(model, params: dict, train_prompts: Sequence, train_completions: Sequence, train_rewards: torch.Tensor,
                       target_prompts: Sequence, target_completions: Sequence, target_rewards: torch.Tensor, pad_id: int, *,
                       num_generations: int, target_generations: int | None = None, normalization: str = "seq-mean",
                       max_length: int | None = None, temperature: float = 1.0, scale_rewards: str = "group",
                       std: str = "population", scales: dict | None = None, micro_batch: int = 64,
                       progress: bool = False) -> dict[str, torch.Tensor]:
    """``delta_J``, ``co_influence`` (= ΔJ / weight; NaN for α ∈ {0,1}) and ``weight`` per train query.

    Groups with α ∈ {0, 1} have ∇J = 0 exactly and are skipped (no backward).
    """
    G = num_generations
    Gt = target_generations or G
    A_t = advantages(target_rewards, Gt, scale_rewards, std)
    was_training = model.training
    model.eval()
    try:
        u = target_direction(model, params, target_prompts, target_completions, A_t, pad_id, normalization=normalization,
                             max_length=max_length, temperature=temperature, micro_batch=micro_batch)
        r = train_rewards.double().reshape(-1, G)
        alpha = r.mean(1)
        w = weight(alpha, G, scale_rewards, std)
        dj = torch.zeros(len(alpha), dtype=torch.float64)
        for q in tqdm(range(len(alpha)), desc="query gradients", file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=False):
            if w[q] == 0:
                continue
            sl = slice(q * G, (q + 1) * G)
            gJ = objective_gradient(model, params, train_prompts[sl], train_completions[sl], r[q], pad_id,
                                    normalization=normalization, max_length=max_length, temperature=temperature,
                                    scale_rewards=scale_rewards, std=std)
            dj[q] = inner(u, gJ, scales)
    finally:
        model.train(was_training)
    co = torch.where(w > 0, dj / torch.where(w > 0, w, torch.ones_like(w)), torch.full_like(w, float("nan")))
    return {"delta_J": dj, "co_influence": co, "weight": w, "alpha": alpha}
