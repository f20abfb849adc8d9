"""The Task contract: the registry, the import graph (trainers, evaluation and analysis never
import a concrete task), and the whole pipeline on each task."""

import ast
import json
from pathlib import Path

import pytest

from coinfluence.errors import UserError
from coinfluence.tasks.base import Task
from coinfluence.tasks.registry import TASKS, get_task

ROOT = Path(__file__).resolve().parent.parent
CONCRETE = ("coinfluence.tasks.igsm", "coinfluence.tasks.units")
TASK_FREE = ("coinfluence/training", "coinfluence/influence")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth of the file (function-level
    imports included), relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def module_file(name: str) -> Path | None:
    for candidate in (ROOT / Path(*name.split(".")).with_suffix(".py"), ROOT / Path(*name.split(".")) / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable(start: Path) -> set[str]:
    """Every coinfluence module ``start`` imports, directly or through other coinfluence modules."""
    seen, stack = set(), [start]
    while stack:
        for name in imported_modules(stack.pop()):
            path = module_file(name) if name.startswith("coinfluence") else None
            if path is not None and name not in seen:
                seen.add(name)
                stack.append(path)
    return seen


def test_the_import_graph_reader_sees_a_concrete_task():
    """The check below must be able to fail: the registry's modules are what a trainer would reach."""
    names = reachable(ROOT / "coinfluence" / "tasks" / "igsm" / "task.py")
    assert "coinfluence.tasks.igsm" in names and "coinfluence.tasks.igsm.check" in names


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for d in TASK_FREE for p in (ROOT / d).glob("*.py")))
def test_trainers_evaluation_and_analysis_never_import_a_concrete_task(path):
    bad = sorted(m for m in reachable(ROOT / path) if m.startswith(CONCRETE))
    assert not bad, f"{path} imports {bad[0]}"


def test_get_task_by_name_and_unknown_names():
    for name in TASKS:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
    assert get_task(None).name == "igsm" and get_task(get_task("units")) is get_task("units")
    with pytest.raises(UserError, match="unknown task 'nope'; choose one of igsm, units, rows"):
        get_task("nope")


# ----------------------------------------------------------------------------- the pipeline on each task

TOY_TRAIN = ["--preset", "nano", "--sft-steps", "3", "--grpo-steps", "1", "--prompts-per-step", "2", "--num-generations", "2",
             "--max-completion-length", "8", "--eval-size", "2", "--eval-steps", "0", "--no-progress"]


@pytest.mark.parametrize("task", ["igsm", "units"])
def test_data_train_eval_analyze_on_each_task_read_the_task_from_the_data(task, tmp_path):
    from typer.testing import CliRunner

    from coinfluence_cli.main import app

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, ["--threads", "1", *map(str, args)])

    def ok(*args):
        result = invoke(*args)
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    data, run = tmp_path / "data", tmp_path / "run"
    ok("data", "--task", task, "--out", data, "--sft-size", "12", "--rl-size", "4", "--eval-size", "2")
    ok("train", "--data", data, "--out", run, *TOY_TRAIN)  # no --task: the data's
    printed = ok("eval", "--ckpt", run / "grpo" / "final", "--data", data, "--splits", "val_id", "--max-new-tokens", "8")
    assert "step checker's verdicts:" in printed  # where the reasoning fails, not only how often
    ok("analyze", "--ckpt", run / "sft", "--run", run, "--queries", "2", "--targets-n", "2", "--num-generations", "2",
       "--max-completion-length", "8", "--no-kernel", "--quiet")
    evals = json.loads((run / "eval.json").read_text())["checkpoints"]
    # the task's own checker read every question (another task's would leave step accuracy None)
    assert all(evals[c][s]["step_accuracy"] is not None for c, s in [("sft", "test_id"), ("grpo/final", "val_id")])
    assert json.loads((run / "analysis" / "sft" / "summary.json").read_text())["options"]["task"] == task
    other = "units" if task == "igsm" else "igsm"
    refused = invoke("eval", "--ckpt", run / "sft", "--data", data, "--task", other)
    assert isinstance(refused.exception, UserError) and f"generated for task {task}" in str(refused.exception)


def test_data_from_before_tasks_had_names_is_igsm_data(tmp_path):
    """A data dir whose data_config.json predates the task field is still reused as iGSM data."""
    from coinfluence.io import read_json, write_json
    from coinfluence.tasks.data import DATA_CONFIG, DataConfig, verify_dataset, write_dataset
    from coinfluence.tasks.registry import data_task

    cfg = DataConfig(seed=1, sft_size=3, rl_size=2, eval_size=1)
    write_dataset(tmp_path, cfg)
    saved = read_json(tmp_path / DATA_CONFIG)
    del saved["data"]["task"]
    write_json(tmp_path / DATA_CONFIG, saved)
    assert data_task(tmp_path) == "igsm"
    verify_dataset(tmp_path, cfg)
    with pytest.raises(UserError, match="task='igsm' \\(now 'units'\\)"):
        verify_dataset(tmp_path, DataConfig(task="units", seed=1, sft_size=3, rl_size=2, eval_size=1))


@pytest.mark.parametrize("command", [["data"], ["score", "rows.jsonl"]])
def test_an_unknown_task_is_one_line_and_a_nonzero_exit_before_any_work(command, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "coinfluence_cli.main", *command, "--task", "nope", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "error: unknown task 'nope'; choose one of igsm, units, rows\n"
    assert not out.exists()
