"""The cost floor of per-rollout gradients, shared by the influence benchmarks."""

from __future__ import annotations

import torch


def backward_floor(model, params: list[torch.Tensor], prompts, completions, pad_id: int, chunk_size: int) -> None:
    """One batched forward and backward of Σℓ per length-sorted chunk of rollouts (the chunks the
    feature engines use), with no per-rollout gradient: any engine that backpropagates every
    rollout costs at least this."""
    from coinfluence.influence.features import ell_rows, rollout_rows_on, row_lengths
    from coinfluence.training.rollout import chunks_by_length

    for idx in chunks_by_length(row_lengths(prompts, completions), chunk_size):
        ids, mask = rollout_rows_on(model, [prompts[i] for i in idx], [completions[i] for i in idx], pad_id)
        ell = ell_rows(model, ids, mask, normalization="seq-mean", max_length=None, temperature=1.0)
        torch.autograd.grad(ell.sum(), params, allow_unused=True)
