"""The run's metric log: one JSON object per logged step in RUN/metrics.jsonl, and optionally the
same numbers as TensorBoard scalars (``--report-to tensorboard``) in RUN/tensorboard/."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from coinfluence.errors import UserError
from coinfluence.io import append_jsonl, drop_torn_tail, read_jsonl, write_jsonl
from coinfluence.run import Run

REPORT_TO = ("none", "tensorboard")

# A sink receives every row log_metrics writes (stage, step, the metrics, time).
Sink = Callable[[dict], None]


def log_metrics(run_dir: str | Path, stage: str, step: int, *, sink: Optional[Sink] = None, **values) -> dict:
    row = {"stage": stage, "step": int(step), **values, "time": round(time.time(), 3)}
    append_jsonl(Run(run_dir).metrics, row)
    if sink is not None:
        sink(row)
    return row


def scalars(row: dict) -> dict[str, float]:
    """The TensorBoard scalars of a metrics row: each numeric field as ``STAGE/NAME`` (``sft/loss``,
    ``grpo/completions/mean_length``); lists such as ``alpha_hist``, the step and the wall time are
    not scalars of the run."""
    return {f"{row['stage']}/{k}": float(v) for k, v in row.items()
            if k not in ("stage", "step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_report_to(report_to: str) -> None:
    """UserError unless ``report_to`` is known and what it needs is installed (before any work)."""
    if report_to not in REPORT_TO:
        raise UserError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise UserError("--report-to tensorboard needs the tensorboard package: pip install 'coinfluence[tensorboard]'") from None


@contextmanager
def metric_sink(run_dir: str | Path, report_to: str = "none") -> Iterator[Optional[Sink]]:
    """The sink of ``report_to`` for the rows of ``run_dir`` (None for ``none``), closed on exit.

    TensorBoard: one event dir per stage (RUN/tensorboard/sft, RUN/tensorboard/grpo, since their
    steps count separately), flushed after every row so that a dashboard follows the run and a
    killed run loses nothing. A resumed run's first row is the first step it redoes: events an
    earlier process logged from that step on are hidden (``purge_step``), as metrics.jsonl drops them."""
    check_report_to(report_to)
    if report_to == "none":
        yield None
        return
    from torch.utils.tensorboard import SummaryWriter

    writers: dict[str, SummaryWriter] = {}

    def write(row: dict) -> None:
        stage = row["stage"]
        if stage not in writers:
            writers[stage] = SummaryWriter(log_dir=str(Run(run_dir).tensorboard / stage), purge_step=row["step"])
        for tag, value in scalars(row).items():
            writers[stage].add_scalar(tag, value, global_step=row["step"], walltime=row.get("time"))
        writers[stage].flush()

    try:
        yield write
    finally:
        for writer in writers.values():
            writer.close()


def drop_metrics_after(run_dir: str | Path, stage: str, step: int) -> None:
    """Forget ``stage`` rows logged after ``step`` (a killed run resumed from an earlier checkpoint
    re-logs those steps; without this the log would hold them twice), and a line a kill cut short."""
    path = Run(run_dir).metrics
    if not path.exists():
        return
    drop_torn_tail(path)
    rows = read_jsonl(path)
    kept = [r for r in rows if not (r.get("stage") == stage and r.get("step", 0) > step)]
    if len(kept) != len(rows):
        write_jsonl(path, kept)
