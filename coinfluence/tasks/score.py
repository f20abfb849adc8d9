"""Score rows of (prompt, completion, answer) from any engine: reward and step verdicts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..io import read_rows
from .answer import reward
from .igsm.check import check_steps


def load_rows(path: str | Path) -> list[dict]:
    return read_rows(path, ("prompt", "completion", "answer"))


def score_rows(rows: list[dict]) -> tuple[list[dict], dict]:
    results, verdicts = [], Counter()
    for i, row in enumerate(rows):
        r = reward(row["completion"], row["answer"])
        report = check_steps(row["prompt"], row["completion"])
        verdicts[report.verdict] += 1
        results.append({
            "id": row.get("id", i), "reward": r, "verdict": report.verdict,
            "first_error_step": report.first_error_step, "n_steps": report.n_steps, "detail": report.detail,
        })
    n = len(rows)
    summary = {
        "n": n,
        "accuracy": sum(x["reward"] for x in results) / n if n else 0.0,
        "step_accuracy": verdicts["correct"] / n if n else 0.0,
        "verdicts": dict(verdicts.most_common()),
    }
    return results, summary
