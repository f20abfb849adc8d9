"""The one way prompts and completions are joined, for training and for generation.

Task tokenizers (no chat template)::

    <bos> PROMPT \\n COMPLETION <eos>

The newline is part of the prompt side, so the model sees exactly ``encode_prompt(prompt)``
at generation time and writes the completion after it. Checkpoints whose tokenizer has a chat
template use it instead: the prompt is the user message with the generation prompt on, the
completion follows, then eos. Loss is taken on the completion and eos only; generation stops
at eos.
"""

from __future__ import annotations

SEPARATOR = "\n"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids the model is conditioned on; the completion starts right after them."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer.encode(text, add_special_tokens=False))
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + list(tokenizer.encode(prompt + SEPARATOR, add_special_tokens=False))


def encode_completion(tokenizer, completion: str) -> list[int]:
    """Completion ids with the stop token appended."""
    return list(tokenizer.encode(completion, add_special_tokens=False)) + [tokenizer.eos_token_id]


def encode_example(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """``(input_ids, completion_mask)``; the mask is 1 on completion tokens (eos included)."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = encode_completion(tokenizer, completion)
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + [1] * len(completion_ids)


def decode_completion(tokenizer, ids: list[int]) -> str:
    """Text of generated ids, cut at the first eos; special tokens dropped, answer markers kept."""
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
