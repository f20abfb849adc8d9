"""Resumable checkpoints: a ``save_pretrained`` directory plus ``trainer_state.pt``.

``trainer_state.pt`` holds the optimizer, scheduler and RNG states (python, numpy, torch),
the optimizer step and the data-order position, so that a killed run continues exactly.
Each directory is built under a temporary name and swapped in (``atomic_dir``), so a kill
during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from coinfluence.io import atomic_dir, write_json

TRAINER_STATE = "trainer_state.pt"
_CKPT_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def optimizer_param_names(model, optimizer) -> list[list[str]]:
    """The parameter name of each tensor of each param group, in the optimizer's order: saved
    beside its state, whose indices follow that order and not ``named_parameters``."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


@contextmanager
def quiet_hf_progress():
    """Hide transformers' per-file progress bars (they would break the training bar's line)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_model_dir(path: Path, model, tokenizer, extra_json: dict[str, dict] | None = None, trainer_state: dict | None = None) -> Path:
    """Write ``path`` atomically: safetensors weights, config, tokenizer, optional extras."""
    with atomic_dir(path) as tmp, quiet_hf_progress():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, obj in (extra_json or {}).items():
            write_json(tmp / name, obj)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
    return path


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoints (with a trainer state) under ``ckpt_root``, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT_NAME.match(p.name)) and (p / TRAINER_STATE).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def prune_checkpoints(ckpt_root: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps everything)."""
    if keep <= 0:
        return
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_trainer_state(ckpt: str | Path) -> dict:
    # Our own file: it holds numpy RNG arrays, which the weights-only unpickler refuses.
    return torch.load(Path(ckpt) / TRAINER_STATE, map_location="cpu", weights_only=False)


def load_weights_into(model, ckpt: str | Path) -> None:
    """Copy a checkpoint's weights into ``model`` (same architecture), exactly."""
    from transformers import AutoModelForCausalLM

    with quiet_hf_progress():
        saved = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=next(model.parameters()).dtype, attn_implementation="eager")
    model.load_state_dict(saved.state_dict())


