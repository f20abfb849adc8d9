"""Per-step influence ``ΔJ(q)`` of each training query on the target objective (docs/maths.md, "Per-step influence ΔJ").

Two routes to the same number:

- pairwise: ``delta_J = weight · co_influence`` with ``co_influence`` from the kernel
  (:mod:`coinfluence.influence.kernel`);
- aggregated ("cost structure"): ``u = (1/N') Σ_j A_j ∇ℓ_j`` from one backward over the
  target rollouts, ``∇J(q) = −∇ grpo_loss(group q)`` from one backward per group, and
  ``delta_J(q) = ⟨u, ∇J(q)⟩``. No per-rollout gradient is ever formed.

Both are per unit step size η. Advantages are the trainer's (:func:`grpo_advantages`, its
``eps``), and ``weight`` carries the same ``eps``, so ``∇J(q) = weight·(ḡ⁺ − ḡ⁻)`` holds exactly
and the two routes agree to rounding.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import torch
from tqdm.auto import tqdm

from coinfluence import distributed as dist_
from coinfluence.influence.features import ell_rows, rollout_rows_on, row_logprobs
from coinfluence.training.objectives import LOSS_NORMALIZATION, group_weight, grpo_advantages, grpo_loss
from coinfluence.training.rollout import eval_mode

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
    return grpo_advantages(rewards.double(), num_generations, scale_rewards, std)


TARGET_OBJECTIVES = {
    "surrogate": "the targets' advantage-weighted GRPO surrogate (1/N') Σ_j A_j ℓ_j, the trainer's objective on the "
                 "target queries; per target query its gradient is ∇E[r]/(σ+eps) with ℓ length-normalised as trained",
    "reward": "the targets' expected reward E[r] (mean over target queries), gradient (1/N') Σ_j (r_j − r̄) ∇s_j with s "
              "the summed token log-probability",
}


def target_weights(rewards: torch.Tensor, num_generations: int, objective: str = "surrogate", scale_rewards: str = "group",
                   std: str = "population", normalization: str = "seq-mean") -> tuple[torch.Tensor, str]:
    """Per-rollout weights ``w_j`` and the normalisation of ``ℓ`` in the target direction
    ``u = (1/N') Σ_j w_j ∇ℓ_j`` of :data:`TARGET_OBJECTIVES`: the trainer's advantages and ``ℓ``
    for ``surrogate``; centred rewards and the summed log-probability for ``reward``."""
    if objective == "surrogate":
        return advantages(rewards, num_generations, scale_rewards, std), normalization
    if objective == "reward":
        return grpo_advantages(rewards.double(), num_generations, "none"), "token-sum"
    raise ValueError(f"unknown target objective {objective!r}; choose one of {', '.join(TARGET_OBJECTIVES)}")


def token_logps_rows(model, prompts, completions, pad_id: int, temperature: float):
    """Per-token log-probs ``[B, L−1]`` and completion mask of right-padded rows (no attention
    mask: causal attention makes trailing padding invisible to real tokens)."""
    ids, mask = rollout_rows_on(model, prompts, completions, pad_id)
    return row_logprobs(model, ids, mask, temperature)


def _grad(scalar: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(scalar, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)).detach() for (n, p), g in zip(params.items(), grads)}


def target_direction(model, params: dict, prompts: Sequence, completions: Sequence, target_advantages: torch.Tensor,
                     pad_id: int, *, normalization: str = "seq-mean", max_length: int | None = None,
                     temperature: float = 1.0, micro_batch: int = 64, total: int | None = None) -> dict[str, torch.Tensor]:
    """``u = (1/N') Σ_j A_j ∇ℓ_j`` over the target rollouts (micro-batched; the sum is one backward's).
    ``total``: ``N'`` when these rollouts are one rank's share of the targets."""
    n = len(prompts)
    N = total or n
    u = {name: torch.zeros_like(p) for name, p in params.items()}
    for s in range(0, n, micro_batch):
        sl = slice(s, min(n, s + micro_batch))
        ids, mask = rollout_rows_on(model, prompts[sl], completions[sl], pad_id)
        ell = ell_rows(model, ids, mask, normalization=normalization, max_length=max_length, temperature=temperature)
        part = _grad((target_advantages[sl].to(ell.device, ell.dtype) * ell).sum() / N, params)
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


def adamw_update(loss_grad: dict[str, torch.Tensor], params: dict[str, torch.Tensor], state: dict[str, dict] | None, *,
                 betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, max_grad_norm: float = 0.0) -> dict[str, torch.Tensor]:
    """``Δθ/lr`` of one AdamW step on the loss gradient ``g`` (``= −∇J``), as the trainer takes it.

    With ``c = min(1, C/(‖g‖ + 1e-6))`` the trainer's norm clipping (``C = max_grad_norm``; the
    norm over the parameters given), the saved moments ``m, v`` and step ``t`` of each tensor:

        m' = β₁m + (1−β₁)·cg,   v' = β₂v + (1−β₂)·(cg)²,   t' = t + 1
        Δθ/lr = −[ (m'/(1−β₁^t')) / (√(v'/(1−β₂^t')) + ε) + λθ ]

    ``state`` None is a fresh optimizer (``m = v = 0``, ``t = 0``; hyperparameters from the
    keywords): the first step ``−cg/(|cg| + ε) − λθ`` is nearly ``−sign(g)``, whatever the
    gradient's scale. ``state[name]`` holds ``exp_avg``, ``exp_avg_sq``, ``step``, ``betas``,
    ``eps`` and ``weight_decay`` (:func:`coinfluence.influence.features.saved_adam_state`).
    """
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in loss_grad.values()))
    clip = min(1.0, max_grad_norm / (norm + 1e-6)) if max_grad_norm else 1.0
    out = {}
    for name, g in loss_grad.items():
        g = g.double() * clip
        st = state[name] if state else {"exp_avg": 0.0, "exp_avg_sq": 0.0, "step": 0.0, "betas": betas, "eps": eps,
                                         "weight_decay": weight_decay}
        (b1, b2), t = st["betas"], st["step"] + 1
        m = b1 * _on(st["exp_avg"], g) + (1 - b1) * g
        v = b2 * _on(st["exp_avg_sq"], g) + (1 - b2) * g * g
        step = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + st["eps"]) + st["weight_decay"] * params[name].detach().double()
        out[name] = (-step).to(params[name].dtype)
    return out


def _on(x, like: torch.Tensor):
    return x.to(like.device, like.dtype) if torch.is_tensor(x) else x


def delta_J_aggregated(model, params: dict, train_prompts: Sequence, train_completions: Sequence, train_rewards: torch.Tensor,
                       target_prompts: Sequence, target_completions: Sequence, target_rewards: torch.Tensor, pad_id: int, *,
                       num_generations: int, target_generations: int | None = None, normalization: str = "seq-mean",
                       max_length: int | None = None, temperature: float = 1.0, scale_rewards: str = "group",
                       std: str = "population", scales: dict | None = None, adam: dict | None = None,
                       target_objective: str = "surrogate", micro_batch: int = 64, progress: bool = False) -> dict[str, torch.Tensor]:
    """``delta_J``, ``co_influence`` (= ⟨u, D∇J(q)⟩ / weight, D = ``scales²``; NaN for α ∈ {0,1})
    and ``weight`` per train query.

    ``u`` is the gradient of ``target_objective`` (:data:`TARGET_OBJECTIVES`). ``delta_J`` is
    ``⟨u, D∇J(q)⟩`` (per unit η), or with ``adam`` (the keywords of
    :func:`adamw_update`) ``⟨u, Δθ(q)/lr⟩``: the first-order change under one AdamW step on the
    group's loss alone. Groups with α ∈ {0, 1} have ∇J = 0 exactly and skip the backward (their
    AdamW step is the momentum and decay drift alone). Under torchrun each
    rank takes a share of the target groups (their ``u`` parts are summed: one all-reduce) and of
    the train queries (their ΔJ are summed into every rank's table).
    """
    G = num_generations
    Gt = target_generations or G
    A_t, target_norm = target_weights(target_rewards, Gt, target_objective, scale_rewards, std, normalization)
    with eval_mode(model):
        mine, _ = dist_.group_shard(len(target_prompts), Gt)
        u = target_direction(model, params, target_prompts[mine], target_completions[mine], A_t[mine], pad_id, normalization=target_norm,
                             max_length=max_length, temperature=temperature, micro_batch=micro_batch, total=len(target_prompts))
        dist_.all_reduce_tensors(list(u.values()))
        r = train_rewards.double().reshape(-1, G)
        alpha = r.mean(1)
        w = weight(alpha, G, scale_rewards, std)
        dj = torch.zeros(len(alpha), dtype=torch.float64)
        dj_adam = torch.zeros(len(alpha), dtype=torch.float64)
        # Groups with α ∈ {0, 1} need no backward, so only the others are dealt across ranks.
        informative = dist_.shard([q for q in range(len(alpha)) if w[q] != 0])
        for q in tqdm(informative, desc="query gradients", file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=False):
            sl = slice(q * G, (q + 1) * G)
            gJ = objective_gradient(model, params, train_prompts[sl], train_completions[sl], r[q], pad_id,
                                    normalization=normalization, max_length=max_length, temperature=temperature,
                                    scale_rewards=scale_rewards, std=std)
            dj[q] = inner(u, gJ, scales)
            if adam:
                dj_adam[q] = inner(u, adamw_update({n: -g for n, g in gJ.items()}, params, **adam))
        dist_.all_reduce_tensors([dj, dj_adam])  # every other rank holds 0 for this rank's queries
        if adam:  # no gradient: the AdamW step of such a group is the momentum and decay drift alone
            zero = {n: torch.zeros_like(p) for n, p in params.items()}
            dj_adam[w == 0] = inner(u, adamw_update(zero, params, **adam))
    co = torch.where(w > 0, dj / torch.where(w > 0, w, torch.ones_like(w)), torch.full_like(w, float("nan")))
    return {"delta_J": dj_adam if adam else dj, "co_influence": co, "weight": w, "alpha": alpha}
