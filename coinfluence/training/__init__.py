"""Training stages: SFT (``train_sft``), evaluation (``evaluate_checkpoint``), checkpoints and metric logs."""

from coinfluence.training.evaluate import (
    alpha_spread,
    evaluate_checkpoint,
    generate_completions,
    greedy_accuracy,
    hf_generate,
    sample_accuracy,
    evaluate_rows,
)
from coinfluence.training.sft import SFTConfig, train_sft

__all__ = [
    "SFTConfig",
    "alpha_spread",
    "evaluate_checkpoint",
    "generate_completions",
    "greedy_accuracy",
    "hf_generate",
    "sample_accuracy",
    "evaluate_rows",
    "train_sft",
]
