"""Tokenizer, prompt format and model presets; ``load_model`` for presets and HF checkpoints."""

from coinfluence.models.format import decode_completion, encode_completion, encode_example, encode_prompt
from coinfluence.models.loading import check_checkpoint_dir, load_model, load_tokenizer
from coinfluence.models.presets import PRESETS, build_preset_model, count_parameters
from coinfluence.models.tokenizer import build_tokenizer

__all__ = [
    "PRESETS",
    "build_preset_model",
    "build_tokenizer",
    "check_checkpoint_dir",
    "count_parameters",
    "decode_completion",
    "encode_completion",
    "encode_example",
    "encode_prompt",
    "load_model",
    "load_tokenizer",
]
