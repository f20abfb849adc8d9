"""Resumable checkpoints: a ``save_pretrained`` directory plus ``trainer_state.pt``.

``trainer_state.pt`` holds the optimizer, scheduler and RNG states (python, numpy, torch),
the optimizer step and the data-order position, so that a killed run continues exactly. It holds
only tensors and plain Python values and is read with ``weights_only=True``: a checkpoint from
elsewhere cannot run code when it is loaded.
Each directory is built under a temporary name and swapped in (``atomic_dir``), so a kill
during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
import random
from contextlib import contextmanager
import shutil
from pathlib import Path

import numpy as np
import torch

from coinfluence.errors import UserError
from coinfluence.io import atomic_dir, write_json
from coinfluence.run import SFT_CHECKPOINT_DIR

TRAINER_STATE = "trainer_state.pt"
def optimizer_param_names(model, optimizer) -> list[list[str]]:
    """The parameter name of each tensor of each param group, in the optimizer's order: saved
    beside its state, whose indices follow that order and not ``named_parameters``."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def rng_states() -> dict:
    """The RNG states as tensors and plain values (what the weights-only loader accepts)."""
    key, words, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"key": key, "words": torch.from_numpy(words.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def restore_rng_states(states: dict) -> None:
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    saved = states["numpy"]
    if isinstance(saved, dict):
        saved = (saved["key"], np.asarray(saved["words"], dtype=np.int64).astype(np.uint32), saved["pos"],
                 saved["has_gauss"], saved["cached_gaussian"])
    np.random.set_state(saved)
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
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := SFT_CHECKPOINT_DIR.match(p.name)) and (p / TRAINER_STATE).exists()]
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


def _legacy_numpy_globals() -> list:
    """What an older trainer_state.pt needs beyond tensors: numpy's RNG array (plain data, no code)."""
    multiarray = getattr(np, "_core", np.core).multiarray
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_trainer_state(ckpt: str | Path) -> dict:
    """``CKPT/trainer_state.pt`` read with the weights-only unpickler; UserError for a file that
    needs anything else (it could run code) or that is not a trainer state."""
    path = Path(ckpt) / TRAINER_STATE
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable or unsafe: either way not loaded
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, pickle.UnpicklingError):
            reason = "it holds objects other than tensors and plain values (refused: loading them could run code)"
        raise UserError(f"cannot load {path}: {reason}") from None
    if not isinstance(state, dict):
        raise UserError(f"cannot load {path}: not a trainer state (a {type(state).__name__})")
    return state


def load_weights_into(model, ckpt: str | Path) -> None:
    """Copy a checkpoint's weights into ``model`` (same architecture), exactly."""
    from transformers import AutoModelForCausalLM

    with quiet_hf_progress():
        saved = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=next(model.parameters()).dtype, attn_implementation="eager")
    model.load_state_dict(saved.state_dict())


