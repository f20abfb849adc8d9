"""Data parallelism on ``torch.distributed``, as launched by ``torchrun`` (or ``accelerate launch``).

Every rank holds the whole model and runs a share of a step's work; gradients are summed
across ranks once per optimizer step (one all-reduce, in buckets), so every rank takes the same
optimizer step as one process would on the whole batch. Per-rollout and per-query results are
gathered, so metrics and tables are those of one process. Only rank 0 writes files.

Without torchrun's environment (``WORLD_SIZE`` unset) nothing here starts a process group and
every helper is the one-process identity: rank 0 of 1.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence, TypeVar

import torch
import torch.distributed as dist

from coinfluence.errors import UserError

T = TypeVar("T")

# Elements per all-reduce bucket: large enough for few calls, small enough that the flat copy
# of a multi-billion-parameter model's gradients is never made at once.
BUCKET_ELEMENTS = 2**25

# Bytes this process has handed to collectives, by kind (the benchmark reports them per step).
TRAFFIC = {"all_reduce": 0, "all_gather": 0}


def launched() -> bool:
    """True under torchrun (which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``...)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def local_device(requested: str) -> str:
    """The device this rank runs on: each rank of a node takes the GPU of its ``LOCAL_RANK``."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} CUDA device(s): "
                            "use at most one process per GPU (--nproc_per_node)")
        return f"cuda:{local_rank}"
    return requested


def init_from_env(requested_device: str = "auto") -> str:
    """Join torchrun's process group (when launched by it) and return the device name to use.

    The backend follows the device: nccl on GPUs, gloo on CPUs.
    """
    if not launched():
        return requested_device
    device = local_device(requested_device)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend_for(torch.device(device)))
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the one rank that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def split_sizes(n: int, world: int | None = None) -> list[int]:
    """``n`` items over ``world`` ranks in contiguous shares that differ by at most one."""
    world = world or world_size()
    return [n // world + (r < n % world) for r in range(world)]


def shard_bounds(n: int) -> tuple[int, int]:
    """``[start, stop)`` of this rank's contiguous share of ``n`` items."""
    sizes = split_sizes(n)
    start = sum(sizes[: rank()])
    return start, start + sizes[rank()]


def shard(items: Sequence[T]) -> list[T]:
    """This rank's contiguous share of ``items``."""
    start, stop = shard_bounds(len(items))
    return list(items[start:stop])


def group_shard(n_rows: int, group: int) -> tuple[slice, list[int]]:
    """This rank's rows of ``n_rows`` laid out group after group (whole groups only), and the row
    counts of every rank (for :func:`gather_rows`)."""
    counts = [group * n for n in split_sizes(n_rows // group)]
    start = sum(counts[: rank()])
    return slice(start, start + counts[rank()]), counts


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_across_ranks(values: Sequence[float]) -> list[float]:
    """Elementwise sum over ranks of a few numbers (float64: integer counts stay exact)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    TRAFFIC["all_reduce"] += t.numel() * t.element_size()
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Sum each tensor over ranks, in place: flattened into buckets of one dtype, one all-reduce each."""
    if not active():
        return
    bucket: list[torch.Tensor] = []
    for t in tensors:
        if bucket and (t.dtype != bucket[0].dtype or t.device != bucket[0].device
                       or sum(b.numel() for b in bucket) + t.numel() > BUCKET_ELEMENTS):
            _reduce_bucket(bucket)
            bucket = []
        bucket.append(t)
    if bucket:
        _reduce_bucket(bucket)


def _reduce_bucket(tensors: list[torch.Tensor]) -> None:
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(_comm_device())
    TRAFFIC["all_reduce"] += flat.numel() * flat.element_size()
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def all_reduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks, in place (a missing gradient counts as 0)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_tensors([p.grad for p in params])


def gather_rows(local: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Every rank's ``local`` rows, concatenated in rank order (on every rank); ``counts`` are the
    row counts of all ranks (known to each, e.g. from :func:`split_sizes`)."""
    if not active():
        return local
    device = _comm_device()
    width = max(counts)
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    TRAFFIC["all_gather"] += padded.numel() * padded.element_size()
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts)]).to(local.device)


def require_at_least_one_each(n: int, what: str) -> None:
    """A UserError when ``n`` items leave some rank without work."""
    if n < world_size():
        raise UserError(f"{what} is {n}, fewer than the {world_size()} processes torchrun started: every rank needs a share")
