"""The contract between a task and the rest of coinfluence.

A :class:`Task` is a frozen bundle of plain functions, the least the trainers, the evaluation,
the analysis and the CLI need from a task: make seeded splits, grade a completion (reward and
step check), read the injected behaviours back from text, and give the words a tokenizer must
hold. The trainers, the evaluation and the analysis take a ``Task`` (``tasks.registry.get_task``)
and never import a concrete one. A DAG-shaped task writes its solutions by rewriting a
``bridge.TraceGraph`` with ``bridge.inject``, so behaviour injection is shared, not per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .score import guess_baseline


@dataclass
class StepReport:
    verdict: str  # "correct" when every step and the answer check out, else what went wrong first
    n_steps: int  # solved steps read (lines with an equation)
    first_error_step: int | None = None  # 1-based index among solved steps
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "correct"


def no_needed_steps(prompt: str) -> None:
    """A task that cannot count the steps a solution needs (then it has no progress reward)."""
    return None


UNREADABLE = "unparseable_question"  # the verdict of a prompt the task's checker cannot read


@dataclass(frozen=True)
class Task:
    name: str
    summary: str  # one line for help texts
    presets: tuple[str, ...]  # named scales of the generator, the default first; () without one
    # (data options) -> the task's validated config, recorded in data_config.json; UserError when bad
    config: Callable[[Any], Any]
    # (data options, task config) -> every split's rows (id, prompt, completion, answer, meta), seeded
    splits: Callable[[Any, Any], dict[str, list[dict]]]
    check_steps: Callable[[str, str], StepReport]  # (prompt, completion): every step and the answer
    count_behaviours: Callable[[str], dict[str, int]]  # lines of each injected behaviour in a completion
    vocabulary: Callable[[str | None], list[str]]  # words a tokenizer for the preset must hold
    reward: str = "answer"  # the default reward (a name of tasks.rewards)
    guess_baseline: Callable[[list[dict]], dict] = guess_baseline  # how far copying a stated number goes
    possessive_tokens: Callable[[dict], bool] = lambda config: False  # tokenizer option of a task config
    needed_steps: Callable[[str], int | None] = no_needed_steps  # steps a solution of the prompt needs (progress reward)

    def reads(self, prompt: str) -> bool:
        """Can this task's checker read ``prompt`` (is it this task's question)?"""
        return self.check_steps(prompt, "").verdict != UNREADABLE

    @property
    def default_preset(self) -> str | None:
        return self.presets[0] if self.presets else None
