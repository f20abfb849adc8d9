"""The co-influence kernel and its per-query summaries (docs/maths.md, "The co-influence kernel K and K⁺/K⁻").

Rollouts are laid out group after group (``G`` rollouts per query, like the trainer), so a
train-side axis of length ``Q·G`` reshapes to ``[Q, G]``.
"""

from __future__ import annotations

import torch


# Rollouts per side of one kernel tile: only a tile's features are upcast to float64 at a time.
KERNEL_TILE = 256


def co_influence_kernel(F_targets: torch.Tensor, F_train: torch.Tensor, tile: int = KERNEL_TILE) -> torch.Tensor:
    """``K[(q',o'), (q,o)] = ⟨g(q',o'), g(q,o)⟩``: rows target rollouts, columns train rollouts.

    Computed in float64 on the target features' device, ``tile`` rollouts of each side at a
    time, so features on a GPU stay there and a float64 copy of all of them never exists."""
    device = F_targets.device
    K = torch.empty(F_targets.shape[0], F_train.shape[0], dtype=torch.float64, device=device)
    for j in range(0, F_train.shape[0], tile):
        train = F_train[j : j + tile].to(device).double()
        for i in range(0, F_targets.shape[0], tile):
            K[i : i + tile, j : j + tile] = F_targets[i : i + tile].double() @ train.T
    return K


def K_plus_minus(K: torch.Tensor, train_rewards: torch.Tensor, num_generations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``K⁺``, ``K⁻`` ``[N_targets, Q_train]``: the mean of ``K`` over each train query's correct
    (reward 1) and incorrect rollouts; NaN where the query has none of that kind. On ``K``'s device."""
    k = K.reshape(K.shape[0], -1, num_generations)
    correct = (train_rewards.reshape(-1, num_generations) > 0.5).to(k.device, k.dtype)
    n_plus, n_minus = correct.sum(1), (1 - correct).sum(1)
    plus = (k * correct).sum(-1) / n_plus
    minus = (k * (1 - correct)).sum(-1) / n_minus
    nan = torch.tensor(float("nan"), dtype=k.dtype, device=k.device)
    return torch.where(n_plus > 0, plus, nan), torch.where(n_minus > 0, minus, nan)


def co_influence(K_plus: torch.Tensor, K_minus: torch.Tensor, target_advantages: torch.Tensor,
                 target_generations: int) -> torch.Tensor:
    """``E_{q'∈Q'} E_{o'}[A(q',o')·(K⁺ − K⁻)]`` per train query ``[Q_train]``: the mean over target
    queries of the mean over their rollouts. NaN for a train query with α ∈ {0, 1}, whose
    ``ḡ⁺ − ḡ⁻`` does not exist."""
    term = target_advantages.to(K_plus.dtype)[:, None] * (K_plus - K_minus)
    per_target_query = term.reshape(-1, target_generations, term.shape[1]).mean(1)
    return per_target_query.mean(0)


def mean_over_targets(K_pm: torch.Tensor) -> torch.Tensor:
    """``K⁺`` or ``K⁻`` averaged over target rollouts (the per-train-query columns of queries.parquet)."""
    return K_pm.mean(0)
