"""GRPO's pieces as small pure functions, shared by the trainer and the influence analysis.

Notation (docs/maths.md): a query has ``G`` rollouts with 0/1 rewards; ``α = n_correct / G``.
``ℓ_i`` is the *normalised* log-probability of rollout ``i`` (``seq-mean``, ``token-sum`` or
``constant``). On-policy, with ``beta = 0`` and population std, the gradient of the GRPO
objective of one group is exactly ``√(α(1−α))·(ḡ⁺ − ḡ⁻)``: :func:`group_weight` gives that
factor under each convention, and the identity is a unit test.
"""

from __future__ import annotations

import math

import torch

NORMALIZATIONS = ("seq-mean", "token-sum", "constant")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
STD_CONVENTIONS = ("population", "unbiased")

# The normalisation of ℓ that each loss type implies (dapo divides by the batch's token
# count, a per-batch constant, so per rollout it is a token sum).
LOSS_NORMALIZATION = {"grpo": "seq-mean", "dr_grpo": "constant", "dapo": "token-sum"}

# Added to the std under the advantages, by the trainer and the influence analysis alike (TRL's value).
ADVANTAGE_EPS = 1e-4


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(target_t | prefix) for aligned ``logits [B, T, V]`` and ``targets [B, T]``.

    Logits are divided by the sampling temperature, so the policy scored is the one that
    sampled the rollouts (as TRL does).
    """
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def normalize_logprob(token_logps: torch.Tensor, mask: torch.Tensor, normalization: str = "seq-mean",
                      max_length: int | None = None) -> torch.Tensor:
    """Per-rollout ``ℓ`` from per-token log-probs over completion tokens (``mask`` = 1)."""
    total = (token_logps * mask).sum(-1)
    if normalization == "seq-mean":
        return total / mask.sum(-1).clamp(min=1)
    if normalization == "token-sum":
        return total
    if normalization == "constant":
        if not max_length:
            raise ValueError("normalization='constant' needs max_length")
        return total / max_length
    raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")


def _std(x: torch.Tensor, convention: str, dim=None) -> torch.Tensor:
    if convention not in STD_CONVENTIONS:
        raise ValueError(f"unknown std convention {convention!r}; choose one of {STD_CONVENTIONS}")
    if dim is None:
        return x.std(unbiased=convention == "unbiased")
    return x.std(dim=dim, unbiased=convention == "unbiased", keepdim=True)


def grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group",
                    std: str = "population", eps: float = ADVANTAGE_EPS) -> torch.Tensor:
    """``A_i = (r_i − mean_group r) / (std + eps)``; rewards are laid out group after group.

    ``scale_rewards``: ``group`` divides by the group's std, ``batch`` by the whole batch's,
    ``none`` not at all (Dr. GRPO). ``std``: ``population`` (ddof 0, the theory's) or
    ``unbiased`` (ddof 1, TRL's and verl's).
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; choose one of {SCALE_REWARDS}")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32)).view(-1, num_generations)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale_rewards == "none":
        return centred.flatten()
    denom = (_std(r, std, dim=1) if scale_rewards == "group" else _std(r.flatten(), std)) + eps
    # A constant group has centred rewards of exactly 0; keep them 0 even when eps = 0.
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return (centred / denom).flatten()


def group_weight(alpha, num_generations: int, scale_rewards: str = "group", std: str = "population",
                 eps: float = ADVANTAGE_EPS):
    """The factor ``w`` in ``∇J(q) = w·(ḡ⁺ − ḡ⁻)`` for one on-policy group, with the advantages
    of :func:`grpo_advantages` (same ``eps``).

    ``α(1−α)/(σ + eps)`` with ``σ`` the group's reward std: ``√(α(1−α))`` as eps → 0 with
    population std, times ``√((G−1)/G)`` with the unbiased std; ``α(1−α)`` without scaling.
    Zero when α ∈ {0, 1}. (``batch`` scaling depends on the whole batch and has no per-query
    closed form.)
    """
    a = torch.as_tensor(alpha, dtype=torch.float64)
    var = a * (1 - a)
    if scale_rewards == "none":
        return var
    if scale_rewards != "group":
        raise ValueError("group_weight has a closed form for scale_rewards 'group' and 'none' only")
    sigma = var.sqrt()
    if std == "unbiased":
        sigma = sigma * math.sqrt(num_generations / (num_generations - 1))
    return torch.where(var > 0, var / (sigma + eps), torch.zeros_like(var))


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π‖π_ref): ``exp(ref − logp) − (ref − logp) − 1`` ≥ 0."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "grpo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """The clipped GRPO surrogate over completion tokens (``[B, T]`` tensors, ``mask`` 0/1).

    ``grpo`` averages tokens within a sequence then sequences; ``dr_grpo`` divides token sums
    by ``B · max_completion_length``; ``dapo`` averages all tokens of the batch.
    Returns the loss and detached statistics (``clip_ratio``, ``kl``).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}")
    mask = mask.to(logps.dtype)
    eps_high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high) * adv
    per_token = -torch.min(unclipped, clipped)
    stats = {}
    if beta:
        kl = kl_k3(logps, ref_logps)
        per_token = per_token + beta * kl
        stats["kl"] = ((kl * mask).sum() / mask.sum().clamp(min=1)).item()
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("loss_type='dr_grpo' needs max_completion_length")
        loss = (per_token * mask).sum() / (mask.shape[0] * max_completion_length)
    else:
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    is_clipped = (clipped < unclipped).to(mask.dtype)  # where the min picked the clipped term
    stats["clip_ratio"] = ((is_clipped * mask).sum() / mask.sum().clamp(min=1)).item()
    return loss, stats


def rollout_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + completion`` rows, so each row's positions start at 0.

    ``completion_mask[b, t] = 1`` where ``input_ids[b, t + 1]`` is a completion token, i.e. it
    is aligned with the log-probs of :func:`sequence_logprobs` (which predict token ``t+1``).
    """
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    completion_mask = torch.zeros((len(prompts), width - 1))
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, : lengths[b]] = torch.tensor(list(p) + list(c), dtype=torch.long)
        attention[b, : lengths[b]] = 1
        completion_mask[b, len(p) - 1 : lengths[b] - 1] = 1
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion_mask}


def batch_to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The same batch with every tensor on ``device`` (the model's)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def sequence_logprobs(model, batch: dict[str, torch.Tensor], temperature: float = 1.0,
                      with_entropy: bool = False):
    """Per-token log-probs ``[B, L-1]`` of each next token (use with ``completion_mask``),
    and optionally the policy's per-token entropy (detached)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    if not with_entropy:
        return token_logprobs(logits, batch["input_ids"][:, 1:], temperature)
    # One log-softmax serves both the token log-probs and the (detached) entropy.
    scaled = logits if temperature in (0.0, 1.0) else logits / temperature
    logp_all = torch.log_softmax(scaled.float() if scaled.dtype in (torch.float16, torch.bfloat16) else scaled, dim=-1)
    logps = logp_all.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logps, entropy
