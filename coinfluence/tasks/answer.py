"""The final-answer marker and the 0/1 reward every stage shares.

A completion ends with ``<answer>VALUE</answer>``. The reward reads the *last* marker, so a
model that writes several answers is judged by its final one. Nothing here raises on bad
text: malformed or missing markers score 0.
"""

from __future__ import annotations

import re

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
_MARKER = re.compile(r"<answer>\s*(-?\d+)\s*</answer>")


def format_answer(value: int) -> str:
    return f"{ANSWER_OPEN}{int(value)}{ANSWER_CLOSE}"


def extract_answer(completion: str) -> int | None:
    """The integer in the last well-formed answer marker, or ``None``."""
    if not isinstance(completion, str):
        return None
    found = _MARKER.findall(completion)
    if not found:
        return None
    try:
        return int(found[-1])
    except ValueError:
        return None


def reward(completion: str, answer: int | str) -> float:
    """1.0 if the marked final answer equals ``answer``, else 0.0 (never raises)."""
    got = extract_answer(completion)
    try:
        want = int(str(answer).strip())
    except (TypeError, ValueError):
        return 0.0
    return float(got is not None and got == want)


def exact_match_reward(completion: str, answer: str) -> float:
    """Reward for data of other tasks: the marked answer, or else the stripped text, equals ``answer``."""
    if not isinstance(completion, str):
        return 0.0
    m = re.findall(r"<answer>(.*?)</answer>", completion, flags=re.S)
    got = (m[-1] if m else completion).strip()
    return float(got == str(answer).strip())
