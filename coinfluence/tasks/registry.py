"""Tasks by name. Each is imported only when asked for, so that a module which takes a Task
(trainers, evaluation, analysis) never imports a concrete one."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UserError
from .base import Task

DEFAULT_TASK = "igsm"
# name -> module whose TASK is the task
TASKS = {
    "igsm": "coinfluence.tasks.igsm.task",
    "units": "coinfluence.tasks.units",
    "rows": "coinfluence.tasks.rows",
}


def tasks_help() -> str:
    """Every task by name with its one-line summary (for help texts)."""
    return "; ".join(f"{name} ({get_task(name).summary})" for name in TASKS)


def presets_help() -> str:
    """``igsm: mini2 (default), mini, paper; units: ...``: the scales of every task with a generator."""
    tasks = [get_task(name) for name in TASKS]
    return "; ".join(f"{t.name}: {', '.join([t.presets[0] + ' (default)', *t.presets[1:]])}" for t in tasks if t.presets)


def get_task(name: str | Task | None = None) -> Task:
    """The task called ``name`` (a Task is returned as is; None is the default task)."""
    if isinstance(name, Task):
        return name
    name = DEFAULT_TASK if name is None else name
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name]).TASK


def data_task(data_dir: str | Path) -> str | None:
    """The task a data dir was generated for (its data_config.json; data written before tasks had
    names is iGSM's), or None for data without a data_config.json."""
    from ..io import read_json
    from .data import DATA_CONFIG

    path = Path(data_dir) / DATA_CONFIG
    if not Path(data_dir).is_dir() or not path.is_file():
        return None
    return read_json(path).get("data", {}).get("task", DEFAULT_TASK)


def resolve_task(given: str | None, data_dir: str | Path | None) -> Task:
    """The task of a command: ``--task`` when given, else the one the data was generated for,
    else the default; UserError when ``--task`` contradicts the data."""
    recorded = data_task(data_dir) if data_dir is not None else None
    if given is not None and recorded is not None and given != recorded:
        raise UserError(f"--task {given} but the data in {data_dir} was generated for task {recorded}")
    return get_task(given or recorded)
