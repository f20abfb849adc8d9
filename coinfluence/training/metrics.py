"""The run's metric log: one JSON object per logged step in RUN/metrics.jsonl."""

from __future__ import annotations

import time
from pathlib import Path

from coinfluence.io import append_jsonl, read_jsonl, write_jsonl

METRICS_FILE = "metrics.jsonl"


def log_metrics(run_dir: str | Path, stage: str, step: int, **values) -> dict:
    row = {"stage": stage, "step": int(step), **values, "time": round(time.time(), 3)}
    append_jsonl(Path(run_dir) / METRICS_FILE, row)
    return row


def drop_metrics_after(run_dir: str | Path, stage: str, step: int) -> None:
    """Forget ``stage`` rows logged after ``step`` (a killed run resumed from an earlier checkpoint
    re-logs those steps; without this the log would hold them twice)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    rows = read_jsonl(path)
    kept = [r for r in rows if not (r.get("stage") == stage and r.get("step", 0) > step)]
    if len(kept) != len(rows):
        write_jsonl(path, kept)
