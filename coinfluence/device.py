"""Where models run: ``--device auto|cpu|cuda|cuda:N``.

Everything downstream follows the model: batches, rollouts and per-rollout gradients are made
on the device of the model's parameters, and results come back to the CPU. The rollout
sampler's uniforms and the Kronecker sketches are drawn on the CPU and moved, so one seed
gives the same rollouts and sketches on every device; dense projection blocks are drawn on
the model's device (there are too many for the CPU on a large model).
"""

from __future__ import annotations

from coinfluence.errors import UserError

_requested = "cpu"  # the library stays on the CPU unless told; the CLI defaults to auto


def resolve_device(name: str = "auto"):
    """``auto`` is the first CUDA GPU when torch sees one, else the CPU; asking for an
    accelerator that is not there is a UserError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: torch {torch.__version__} sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: torch sees only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":  # the analysis needs float64, which MPS lacks
        raise UserError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def set_default_device(name: str) -> None:
    """The device ``load_model`` uses when not told (the CLI's ``--device``); checked now,
    so a bad name fails before any work."""
    global _requested
    if name != "auto":
        resolve_device(name)
    _requested = name


def default_device():
    return resolve_device(_requested)


def model_device(model):
    """The device of a model's (first) parameter."""
    return next(model.parameters()).device
