"""``load_model``: a preset name builds a fresh model, a path loads any HF causal LM checkpoint.

Every problem a user can cause is reported as a one-line ``UserError`` before weights are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from coinfluence.device import default_device, resolve_device
from coinfluence.errors import UserError
from coinfluence.models.gguf_import import NAMED_MODELS, resolve_named_model
from coinfluence.models.presets import PRESETS, build_preset_model

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def is_preset(name_or_path: str | os.PathLike) -> bool:
    """A preset name that is not also an existing path (a local dir named "tiny" wins)."""
    return str(name_or_path) in PRESETS and not Path(name_or_path).exists()


def check_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint dir ``path`` names (a named pretrained model resolves to its imported dir)."""
    path = resolve_named_model(path)
    if not path.exists():
        hint = f" (and not a model preset: {', '.join(PRESETS)}, nor a named model: {', '.join(NAMED_MODELS)})" if len(path.parts) == 1 else ""
        raise UserError(f"checkpoint not found: {path}{hint}")
    if not path.is_dir():
        raise UserError(f"checkpoint must be a directory, got a file: {path}")
    if not (path / "config.json").exists():
        raise UserError(f"{path} is not a model checkpoint (no config.json)")
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise UserError(f"{path} has no model weights (expected one of: {', '.join(WEIGHT_FILES)})")
    return path


def ensure_pad_token(tokenizer):
    """Batching needs a pad token; reuse eos like most HF recipes when the checkpoint has none."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise UserError("tokenizer has neither a pad nor an eos token; cannot batch")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path: str | os.PathLike):
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as err:  # noqa: BLE001 - every loader failure is a bad checkpoint to the user
        raise UserError(f"cannot load a tokenizer from {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return ensure_pad_token(tokenizer)


def load_model(path_or_preset: str | os.PathLike, tokenizer=None, *, seed: int = 0, dtype: torch.dtype = torch.float32,
               device: str | torch.device | None = None):
    """Return ``(model, tokenizer)`` in eval mode on ``device`` (default: :func:`default_device`),
    with eager attention and a pad token set.

    * preset name ("tiny", "small", ...): a new randomly initialised model (seeded) sized to
      ``tokenizer``; without a tokenizer one is built from the task vocabulary.
    * path: any directory ``AutoModelForCausalLM``/``AutoTokenizer`` accept; ``tokenizer``
      overrides the checkpoint's own tokenizer.
    * a named pretrained model ("smollm2-135m"): its imported dir (``models.gguf_import``).
    """
    if is_preset(path_or_preset):
        if tokenizer is None:
            tokenizer = default_task_tokenizer()
        model = build_preset_model(str(path_or_preset), ensure_pad_token(tokenizer), seed=seed)
        return model.to(_target(device)), tokenizer

    path = check_checkpoint_dir(path_or_preset)
    if tokenizer is None:
        tokenizer = load_tokenizer(path)
    else:
        ensure_pad_token(tokenizer)
    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot read the model config in {path}: {str(err).splitlines()[0]}") from None
    rows = getattr(config, "vocab_size", None) or getattr(config.get_text_config(), "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise UserError(f"tokenizer has {len(tokenizer)} tokens but the model in {path} has only {rows} embedding rows")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its report of missing weights: check_loading_info says it in one line
    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="eager",
                                                           output_loading_info=True)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot load model weights from {path}: {str(err).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    check_loading_info(path, info)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(_target(device)).eval(), tokenizer


def check_loading_info(path: Path, info: dict) -> None:
    """UserError when the weights in ``path`` do not fill the architecture its config names
    (missing, unexpected or misshapen tensors): such a model would be partly random."""
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        found = sorted(map(str, info.get(kind) or []))
        if found:
            more = f" and {len(found) - 1} more" if len(found) > 1 else ""
            raise UserError(f"the weights in {path} do not match its config.json: {kind.replace('_', ' ')} {found[0]}{more}")


def check_prompt_lengths(model, tokenizer, prompts, new_tokens: int) -> None:
    """UserError when a prompt plus ``new_tokens`` exceeds the positions the model has (a long
    prompt would otherwise be batched, padded and differentiated at any cost)."""
    from coinfluence.models.format import encode_prompt

    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit:
        return
    for i, prompt in enumerate(prompts):
        length = len(encode_prompt(tokenizer, prompt[: 16 * limit]))  # no text beyond this can fit
        if length + new_tokens > limit:
            raise UserError(f"prompt {i + 1} has {length}+ tokens; with {new_tokens} new tokens that exceeds "
                            f"the model's {limit} positions")


def _target(device) -> torch.device:
    if device is None:
        return default_device()
    return device if isinstance(device, torch.device) else resolve_device(device)


def default_task_tokenizer(preset: str = "mini", task=None):
    """The word-level tokenizer of ``task``'s generator vocabulary (a Task or a name; None: the
    default task) at ``preset``."""
    from coinfluence.models.tokenizer import build_tokenizer
    from coinfluence.tasks.registry import get_task

    return build_tokenizer(get_task(task).vocabulary(preset))
