"""coinfluence: why reinforcement finetuning helps one model and not another.

Stages (one sub-package each): ``tasks`` (the Task contract; iGSM-style and unit-conversion
data, behaviour injection, answer and step checking), ``models`` (tokenizer and presets), ``training`` (SFT, rollouts, GRPO),
``influence`` (per-rollout gradients, co-influence, per-step influence), ``plots``.
"""

__version__ = "0.1.0"
