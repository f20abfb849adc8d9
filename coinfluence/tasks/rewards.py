"""The rewards a user chooses with ``--reward`` (GRPO, eval, analyze): a name, or ``module:function``.

Every reward is a function ``(prompt, completion, answer) -> float``; the built-in ones are 0/1
and never raise on bad text. A user's ``module:function`` is called as
``function(completion, answer, prompt)`` and its value taken as a float.

``answer`` reads the task's ``<answer>`` marker: right for models trained on the task, 0 for a
pretrained model that answers in its own words, which the number and ``\\boxed{}`` readers cover.
"""

from __future__ import annotations

import importlib
import re
from fractions import Fraction
from typing import Callable

from coinfluence.errors import UserError
from coinfluence.tasks.answer import exact_match_reward, reward as answer_reward

RewardFn = Callable[[str, str, object], float]

REWARDS = {
    "answer": "the last <answer> marker holds the answer",
    "steps": "the answer and every step the task's checker reads are right",
    "progress": "steps, with partial credit: 0.5 x the share of the needed steps right before the first wrong one",
    "first-number": "the first number of the completion equals the answer",
    "last-number": "the last number of the completion equals the answer",
    "boxed": "the last \\boxed{} holds the answer",
    "exact": "the last <answer> marker, else the whole completion, is the answer's text",
}
DEFAULT_REWARD = "answer"
REWARD_HELP = ("what earns reward 1: " + "; ".join(f"{k} ({v})" for k, v in REWARDS.items())
               + "; or module:function, called as function(completion, answer, prompt) -> float")

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_BOXED = "\\boxed{"


def as_number(text: str) -> Fraction | None:
    """``text`` as an exact number ("1,200", "-3", "2.50"), or None."""
    try:
        return Fraction(str(text).strip().replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def same_value(got: str | None, answer: object) -> float:
    """1.0 when ``got`` equals ``answer``: as numbers when both are numbers, else as stripped text."""
    if got is None:
        return 0.0
    a, b = as_number(got), as_number(str(answer))
    if a is not None and b is not None:
        return float(a == b)
    return float(got.strip() == str(answer).strip())


def numbers(completion: str) -> list[str]:
    return _NUMBER.findall(completion) if isinstance(completion, str) else []


def last_boxed(completion: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces balanced), or None."""
    if not isinstance(completion, str):
        return None
    start = completion.rfind(_BOXED)
    if start < 0:
        return None
    depth, begin = 1, start + len(_BOXED)
    for i in range(begin, len(completion)):
        depth += {"{": 1, "}": -1}.get(completion[i], 0)
        if depth == 0:
            return completion[begin:i]
    return None


def progress_reward(report, needed: int | None) -> float:
    """1 for a step-verified solution; otherwise half the share of the ``needed`` steps that check
    out before the first wrong one, so a group whose rollouts all fail still ranks them (an
    all-wrong group gives no gradient under a 0/1 reward). Without ``needed``, 0 or 1."""
    if report.ok:
        return 1.0
    if not needed:
        return 0.0
    verified = report.n_steps if report.first_error_step is None else report.first_error_step - 1
    return 0.5 * min(verified, needed) / needed


BUILTIN: dict[str, RewardFn] = {
    "answer": lambda prompt, completion, answer: answer_reward(completion, answer),
    "first-number": lambda prompt, completion, answer: same_value(next(iter(numbers(completion)), None), answer),
    "last-number": lambda prompt, completion, answer: same_value((numbers(completion) or [None])[-1], answer),
    "boxed": lambda prompt, completion, answer: same_value(last_boxed(completion), answer),
    "exact": lambda prompt, completion, answer: exact_match_reward(completion, answer),
}


def accuracy_reward(name: str) -> str:
    """The reward behind an "accuracy": the answer's own, so ``steps`` and ``progress`` (which
    also grade the reasoning, reported as step accuracy) count the answer marker."""
    return "answer" if name in ("steps", "progress") else name


def reward_fn(name: str, task=None) -> RewardFn:
    """The reward called ``name`` (a key of ``REWARDS`` or ``module:function``); UserError otherwise.
    ``steps`` grades with ``task``'s step checker (a Task or a name; None: the default task)."""
    if name in ("steps", "progress"):
        from coinfluence.tasks.base import no_needed_steps
        from coinfluence.tasks.registry import get_task

        task = get_task(task)
        if name == "progress":
            if task.needed_steps is no_needed_steps:
                raise UserError(f"--reward progress needs to know how many steps a solution takes; task {task.name} does not say")
            return lambda prompt, completion, answer: progress_reward(task.check_steps(prompt, completion), task.needed_steps(prompt))
        return lambda prompt, completion, answer: float(task.check_steps(prompt, completion).ok)  # needs the right answer too
    if name in BUILTIN:
        return BUILTIN[name]
    if not isinstance(name, str) or name.count(":") != 1 or not all(name.split(":")):
        raise UserError(f"--reward must be one of {', '.join(REWARDS)} or module:function, got {name!r}")
    module_name, attr = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"--reward {name}: cannot import {module_name} ({err})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"--reward {name}: {module_name} has no function {attr}")
    return lambda prompt, completion, answer: float(fn(completion, answer, prompt))


def reward_scores(name: str, prompts, completions, answers, task=None) -> list[float]:
    """The reward ``name`` of each (prompt, completion, answer)."""
    fn = reward_fn(name, task)
    return [fn(p, c, a) for p, c, a in zip(prompts, completions, answers)]
