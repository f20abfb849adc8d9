"""Bring-your-own data as a Task: rows of prompt and answer (``train --data FILE``), with no
generator and no step checker. Rewards compare the answer (``exact`` by default, so answers
need not be numbers); step metrics read as absent and no behaviour is counted."""

from __future__ import annotations

from ..errors import UserError
from .base import UNREADABLE, StepReport, Task


def _no_generator(*_):
    raise UserError("task rows has no generator; pass your rows with --data")


TASK = Task(
    name="rows",
    summary="your own prompt and answer rows",
    presets=(),
    config=_no_generator,
    splits=_no_generator,
    check_steps=lambda prompt, completion: StepReport(UNREADABLE, 0, None, "rows carry no steps to check"),
    count_behaviours=lambda completion: {},
    vocabulary=lambda preset: [],
    reward="exact",
)
