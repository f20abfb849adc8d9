"""Llama-architecture model sizes that train on a laptop CPU.

All presets use eager attention (``torch.func``/``vmap`` over per-rollout gradients breaks
on SDPA kernels) and tied input/output embeddings (the vocabulary is tiny, so the head would
otherwise be a large share of the parameters for no gain).
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from coinfluence.errors import UserError

# name -> (hidden, layers, heads, intermediate); head_dim = hidden / heads.
PRESETS: dict[str, dict] = {
    "nano": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192),  # tests
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512),  # ~1M
    "small": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=1024),  # ~6M
    "base": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1536),  # ~27M
}
MAX_POSITIONS = 2048  # RoPE has no learned positions, so a generous limit costs nothing


def preset_config(name: str, vocab_size: int, *, bos_token_id=None, eos_token_id=None, pad_token_id=None) -> LlamaConfig:
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)} or a checkpoint path")
    sizes = PRESETS[name]
    return LlamaConfig(
        vocab_size=vocab_size,
        num_key_value_heads=sizes["num_attention_heads"],
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        attn_implementation="eager",
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **sizes,
    )


def build_preset_model(name: str, tokenizer, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised model sized to ``tokenizer``; the same seed gives the same weights.

    The global torch RNG is left untouched, so building a model does not shift a run's data order.
    """
    config = preset_config(
        name,
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.float().eval()


def count_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
