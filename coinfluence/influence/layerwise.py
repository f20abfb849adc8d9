"""Per-rollout gradients from one batched backward, layer by layer.

For a linear map ``y = W x`` applied at every position ``t`` of a row, the gradient of that
row's ``ℓ`` is ``Σ_t δ_t x_tᵀ`` with ``δ_t = ∂ℓ/∂y_t``. Rows of a batch do not interact
(attention is within a row, there is no batch norm), so one forward over a chunk and one
``autograd.grad`` of ``Σ_b ℓ_b`` with respect to every layer's *output* give every row's
``δ``; the per-row weight gradients are then a batched outer product. No weight gradient is
ever formed for the batch, and there is no per-row Python loop: this is as fast as per-row
gradients get, one batched backward plus the outer products.

Supported parameter owners: ``nn.Linear`` (weight, bias), ``nn.Embedding`` (a tied output
head is a Linear sharing the embedding's tensor: both uses add into one gradient, as
autograd does), and RMSNorm-style scales (``weight ⊙ x̂`` with ``x̂ = x / rms(x)``; modules
with a ``variance_epsilon`` or ``eps`` attribute and a 1-D ``weight``). Anything else raises.

``kron_rank = k`` sketches each matrix gradient ``G [out, in]`` to ``P_outᵀ G P_in [k, k]``
with seeded Gaussian ``P`` (entries N(0, 1/k)), computed as ``Σ_t (P_outᵀ δ_t)(P_inᵀ x_t)ᵀ``
without ever forming ``G``: cost and memory per row are O(T·k·(in + out) + k²) instead of
O(in·out). ``E⟨P_oᵀ G P_i, P_oᵀ G' P_i⟩ = ⟨G, G'⟩`` (the two sides are independent with
``E[P Pᵀ] = I``), so kernels stay unbiased. Vectors (biases of matrices aside, norm scales)
are kept exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from coinfluence.errors import UserError
from coinfluence.influence.features import ell_rows, feature_rows, finish, rollout_rows_on, row_lengths, select_params
from coinfluence.training.rollout import chunks_by_length, eval_mode


def _is_rms_norm(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return (isinstance(w, torch.Tensor) and w.dim() == 1 and "norm" in type(module).__name__.lower()
            and (hasattr(module, "variance_epsilon") or hasattr(module, "eps")))


def owners(model, params: dict[str, torch.Tensor]) -> list[tuple[nn.Module, dict[str, str]]]:
    """Modules whose calls produce the selected parameters' gradients, with
    ``{role: parameter name}`` (role ``weight`` or ``bias``). Raises when a selected parameter
    is owned by a module type this engine cannot handle."""
    by_tensor = {id(p): name for name, p in params.items()}
    found, covered = [], set()
    for module in model.modules():
        roles = {}
        for role, p in module.named_parameters(recurse=False):
            if id(p) in by_tensor:
                roles[role] = by_tensor[id(p)]
        if not roles:
            continue
        supported = (isinstance(module, (nn.Linear, nn.Embedding)) or _is_rms_norm(module)) and set(roles) <= {"weight", "bias"}
        if not supported:
            name = next(iter(roles.values()))
            raise UserError(f"the layerwise engine cannot take per-rollout gradients of {name} "
                            f"({type(module).__name__}); use --engine vmap or narrow --params")
        found.append((module, roles))
        covered.update(roles.values())
    missing = set(params) - covered
    if missing:
        raise UserError(f"parameters not owned by any module: {sorted(missing)[:3]}")
    return found


def _sketch(seed: int, name: str, side: str, size: int, rank: int, dtype, device="cpu") -> torch.Tensor:
    # Drawn on the CPU, so a seed gives the same sketch on every device.
    digest = hashlib.sha256(f"{seed}:kron:{name}:{side}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randn(size, rank, generator=gen, dtype=torch.float64).mul_(rank**-0.5).to(device, dtype)


def kron_feature_dim(params: dict[str, torch.Tensor], rank: int) -> int:
    return sum(rank * rank if p.dim() == 2 else p.numel() for p in params.values())


@contextlib.contextmanager
def _recording(model, found):
    """Forward hooks that keep each owner call's input and output (and norms' x̂) in the list
    this yields, removed on exit."""
    calls: list[tuple[nn.Module, dict, torch.Tensor, torch.Tensor]] = []
    handles = []
    for module, roles in found:
        def hook(mod, inputs, output, roles=roles):
            x = inputs[0]
            if _is_rms_norm(mod):
                eps = getattr(mod, "variance_epsilon", getattr(mod, "eps", 1e-6))
                xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
                x = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
            calls.append((mod, roles, x.detach(), output))
        handles.append(module.register_forward_hook(hook))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()
        calls.clear()


def _row_grads(mod, roles, x, delta, sketches, kron_rank):
    """{parameter name: per-row gradient [B, ...]} of one call (sketched if ``kron_rank``)."""
    out = {}
    if isinstance(mod, nn.Embedding):
        name = roles["weight"]
        V = mod.weight.shape[0]
        if kron_rank:
            rows = sketches[(name, "out")][x]  # one-hot(ids) @ P_out without the one-hot
            out[name] = torch.einsum("btk,btl->bkl", rows, delta @ sketches[(name, "in")])
        else:
            g = torch.zeros(x.shape[0], V, delta.shape[-1], dtype=delta.dtype, device=delta.device)
            g.scatter_add_(1, x.unsqueeze(-1).expand_as(delta), delta)
            out[name] = g
        return out
    if isinstance(mod, nn.Linear):
        if "weight" in roles:
            name = roles["weight"]
            if kron_rank:
                a = delta @ sketches[(name, "out")]
                b = x @ sketches[(name, "in")]
                out[name] = torch.einsum("btk,btl->bkl", a, b)
            else:
                out[name] = torch.einsum("bto,bti->boi", delta, x)
        if "bias" in roles:
            name = roles["bias"]
            out[name] = delta.sum(1)
        return out
    out[roles["weight"]] = (delta * x).sum(1)  # RMSNorm scale
    return out


def features_layerwise(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, *,
                       normalization: str = "seq-mean", max_length: int | None = None, temperature: float = 1.0,
                       params: dict | None = None, chunk_size: int = 32, project_dim: int | None = None,
                       kron_rank: int | None = None, seed: int = 0, scales: dict | None = None,
                       progress: bool = False, on_device: bool = False) -> torch.Tensor:
    """Features ``[N, D]`` equal to :func:`features.features_vmap`'s (same layout, same dense
    sketch), or with ``kron_rank`` the per-layer Kronecker sketch (``D`` =
    :func:`kron_feature_dim`); computed on the model's device, returned on the CPU (``on_device``:
    left there)."""
    if kron_rank and (project_dim or scales):
        raise UserError("the Kronecker sketch cannot be combined with --project-dim or --precondition adam")
    params = params if params is not None else select_params(model)
    found = owners(model, params)
    dtype = next(iter(params.values())).dtype
    device = next(iter(params.values())).device
    sketches = {}
    if kron_rank:
        for name, p in params.items():
            if p.dim() == 2:
                sketches[(name, "out")] = _sketch(seed, name, "out", p.shape[0], kron_rank, dtype, device)
                sketches[(name, "in")] = _sketch(seed, name, "in", p.shape[1], kron_rank, dtype, device)

    n = len(prompts)
    out = None
    bar = tqdm(total=n, desc="features", file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=False)
    with eval_mode(model), _recording(model, found) as calls, bar:
        for idx in chunks_by_length(row_lengths(prompts, completions), chunk_size):
            ids, mask = rollout_rows_on(model, [prompts[i] for i in idx], [completions[i] for i in idx], pad_id)
            calls.clear()
            with torch.enable_grad():
                ell = ell_rows(model, ids, mask, normalization=normalization, max_length=max_length, temperature=temperature)
                outputs = [c[3] for c in calls]
                deltas = torch.autograd.grad(ell.sum(), outputs, allow_unused=True)
            grads: dict[str, torch.Tensor] = {}
            for (mod, roles, x, y), delta in zip(calls, deltas):
                if delta is None:
                    continue
                for name, g in _row_grads(mod, roles, x, delta.detach(), sketches, kron_rank).items():
                    grads[name] = grads[name] + g if name in grads else g
            B = len(idx)
            for name, p in params.items():  # parameters this chunk never reached
                if name not in grads:
                    shape = (kron_rank, kron_rank) if kron_rank and p.dim() == 2 else tuple(p.shape)
                    grads[name] = torch.zeros((B, *shape), dtype=dtype, device=device)
            grads = {name: grads[name] for name in params}  # the layout of features_vmap
            if kron_rank:
                chunk = torch.cat([g.reshape(B, -1) for g in grads.values()], dim=1)
            else:
                chunk = finish(grads, scales=scales, project_dim=project_dim, seed=seed)
            if out is None:
                out = feature_rows(n, chunk, on_device)
            out[torch.tensor(idx)] = chunk.to(out.device)
            bar.update(B)
    return out
