"""Score rows of (prompt, completion, answer) from any engine: reward, step verdicts, guessing.

A task whose answer is a number can be passed by copying a number from the question; the guess
baselines here say how far that goes, so that an accuracy is never read without them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean

from ..errors import UserError
from ..io import read_rows
from .answer import extract_answer, reward

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?!\w|\.\d)")  # an integer, also before a full stop


def load_rows(path: str | Path) -> list[dict]:
    rows = read_rows(path, ("prompt", "completion", "answer"))
    bad = next((i for i, r in enumerate(rows) if not isinstance(r["prompt"], str) or not isinstance(r["completion"], str)), None)
    if bad is not None:
        raise UserError(f"{path}: row {bad + 1}: prompt and completion must be text")
    return rows


def stated_numbers(prompt: str) -> list[int]:
    """The integers a prompt states, in order of appearance."""
    return [int(x) for x in _NUMBER.findall(prompt or "")]


def _as_int(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def guess_baseline(rows: list[dict]) -> dict:
    """How well guessing from the question alone does on ``rows`` (prompt, answer):

    - ``guess/stated``: share of rows whose answer is a number the prompt states (the ceiling of
      any guesser that copies a number);
    - ``guess/mode_stated``: accuracy of answering the prompt's most frequent number (first on ties);
    - ``guess/majority``: accuracy of answering the most common answer of ``rows`` (known in hindsight).
    """
    if not rows:
        return {}
    answers = [_as_int(r["answer"]) for r in rows]
    numbers = [stated_numbers(r["prompt"]) for r in rows]
    mode = [Counter(ns).most_common(1)[0][0] if ns else None for ns in numbers]
    majority = Counter(answers).most_common(1)[0][0]
    n = len(rows)
    return {
        "guess/stated": sum(a in ns for a, ns in zip(answers, numbers)) / n,
        "guess/mode_stated": sum(a is not None and a == m for a, m in zip(answers, mode)) / n,
        "guess/majority": sum(a == majority for a in answers) / n,
    }


def behaviour_frequencies(completions: list[str], task) -> dict:
    """``behaviours/KIND``: the share of completions with at least one line of each behaviour
    ``task`` injects, read back from the text (so it works on model outputs as on generated data)."""
    if not completions:
        return {}
    counts = [task.count_behaviours(c) for c in completions]
    return {f"behaviours/{k}": sum(c[k] > 0 for c in counts) / len(counts) for k in counts[0]}


def answer_is_stated(prompt: str, completion: str) -> bool:
    """Does the completion's final answer copy a number the prompt states?"""
    got = extract_answer(completion)
    return got is not None and got in stated_numbers(prompt)


def difficulty_summary(records: Sequence[dict], n: int, needed_steps) -> dict:
    """Answer and step-verified accuracy (mean@n) of the queries grouped by the steps a solution
    needs (``needed_steps(prompt)``, the task's measure of difficulty): ``steps/K/num_rows``,
    ``steps/K/accuracy``, ``steps/K/step_accuracy``. A gain that an average shows can sit on the
    easy queries only; this says where it sits. Empty where the task cannot count the steps."""
    groups: dict[int, list[dict]] = {}
    for start in range(0, len(records), n):
        steps = needed_steps(records[start]["prompt"])
        if steps is not None:
            groups.setdefault(steps, []).extend(records[start : start + n])
    out = {}
    for steps, group in sorted(groups.items()):
        out[f"steps/{steps}/num_rows"] = len(group) // n
        out[f"steps/{steps}/accuracy"] = fmean(r["reward"] for r in group)
        out[f"steps/{steps}/step_accuracy"] = fmean(r["verdict"] == "correct" for r in group)
    return out


def score_rows(rows: list[dict], task) -> tuple[list[dict], dict]:
    """Per-row reward and step verdict of ``task``'s checker, and their summary."""
    results, verdicts = [], Counter()
    for i, row in enumerate(rows):
        r = reward(row["completion"], row["answer"])
        report = task.check_steps(row["prompt"], row["completion"])
        verdicts[report.verdict] += 1
        results.append({
            "id": row.get("id", i), "reward": r, "verdict": report.verdict,
            "first_error_step": report.first_error_step, "n_steps": report.n_steps, "detail": report.detail,
            "answer_stated": answer_is_stated(row["prompt"], row["completion"]),
        })
    n = len(rows)
    correct = sum(x["reward"] for x in results)
    summary = {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "step_accuracy": verdicts["correct"] / n if n else 0.0,
        "faithful_share": verdicts["correct"] / correct if correct else None,
        "answer_stated": sum(x["answer_stated"] for x in results) / n if n else 0.0,
        **task.guess_baseline(rows),
        **behaviour_frequencies([row["completion"] for row in rows], task),
        **difficulty_summary([{"prompt": row["prompt"], **x} for row, x in zip(rows, results)], 1, task.needed_steps),
        "verdicts": dict(verdicts.most_common()),
    }
    return results, summary
