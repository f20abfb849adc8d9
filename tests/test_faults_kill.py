"""kill -9 at each stage of a run, then ``--resume``: the weights, metric rows and evaluations of
a run never stopped (issue 14). Each kill is a real SIGKILL of a ``coinfluence`` process, made at a
chosen call by ``kill_at.py``."""

import subprocess
import sys
from pathlib import Path

import pytest

from coinfluence.io import read_jsonl

KILL_AT = str(Path(__file__).with_name("kill_at.py"))
# Wall-clock measurements, the only metrics a kill may change.
TIMING = ("time", "tokens_per_second", "step_time", "time/generate", "time/update")
NANO = ["--preset", "nano", "--sft-steps", "4", "--save-steps", "2", "--grpo-steps", "4", "--prompts-per-step", "2",
        "--num-generations", "2", "--max-completion-length", "8", "--eval-size", "2", "--eval-steps", "2", "--no-progress"]


def coinfluence(*args, kill_at: str | None = None):
    trap = [KILL_AT, kill_at] if kill_at else ["-m", "coinfluence_cli.main"]
    return subprocess.run([sys.executable, *trap, "--threads", "1", *map(str, args)], capture_output=True, text=True)


def killed(result) -> bool:
    return result.returncode == -9


def outcome(run: Path) -> dict:
    """What a finished run leaves that no kill may change: every weights file, the metric rows
    without their timings, the evaluation summary and records."""
    return {
        "weights": {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("model.safetensors"))},
        "metrics": [{k: v for k, v in row.items() if k not in TIMING} for row in read_jsonl(run / "metrics.jsonl")],
        "eval": {str(p.relative_to(run)): p.read_bytes() for p in [run / "eval.json", *sorted(run.glob("eval/*.jsonl"))]},
        "temporaries": sorted(str(p.relative_to(run)) for p in run.rglob(".*.tmp")),
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "data"
    r = coinfluence("data", "--out", out, "--sft-size", "24", "--rl-size", "8", "--eval-size", "4")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "run"
    r = coinfluence("train", "--data", data_dir, "--out", out, *NANO)
    assert r.returncode == 0, r.stderr
    return outcome(out)


def kill_then_resume(data_dir, out: Path, kill_at: str) -> dict:
    r = coinfluence("train", "--data", data_dir, "--out", out, *NANO, kill_at=kill_at)
    assert killed(r), r.stderr
    r = coinfluence("train", "--resume", "--data", data_dir, "--out", out, *NANO)
    assert r.returncode == 0, r.stderr
    return outcome(out)


@pytest.mark.parametrize("stage, kill_at", [
    ("an SFT step", "coinfluence.training.sft:optimizer_step:3"),  # after the step-2 checkpoint
    ("a GRPO step", "coinfluence.training.grpo:_optimise:3"),  # after the GRPO step-2 checkpoint
    ("the final evaluation", "coinfluence.training.evaluate:write_jsonl:2"),  # eval.json has grpo/final, its records not
])
@pytest.mark.slow
def test_a_run_killed_during_a_stage_resumes_to_the_same_results(stage, kill_at, data_dir, uninterrupted, tmp_path):
    assert kill_then_resume(data_dir, tmp_path / "run", kill_at) == uninterrupted, stage


@pytest.mark.parametrize("save", [2, 4])  # SFT checkpoint 4 (checkpoint 2 complete), GRPO step-4 (step-2 complete)
@pytest.mark.slow
def test_a_run_killed_while_a_checkpoint_is_written_resumes_to_the_same_results(save, data_dir, uninterrupted, tmp_path):
    out = tmp_path / "run"
    r = coinfluence("train", "--data", data_dir, "--out", out, *NANO, kill_at=f"torch:save:{save}:torn")
    assert killed(r), r.stderr
    assert list(out.rglob(".checkpoint-*.tmp/trainer_state.pt")) or list(out.rglob(".step-*.tmp/trainer_state.pt"))
    r = coinfluence("train", "--resume", "--data", data_dir, "--out", out, *NANO)
    assert r.returncode == 0, r.stderr
    assert outcome(out) == uninterrupted


def test_data_killed_between_two_files_is_regenerated_whole(data_dir, tmp_path):
    out = tmp_path / "data"
    args = ["data", "--out", out, "--sft-size", "24", "--rl-size", "8", "--eval-size", "4"]
    assert killed(coinfluence(*args, kill_at="os:replace:3"))  # val_id written, not yet renamed into place
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["rl_train.jsonl", "sft.jsonl"]
    r = coinfluence("train", "--data", out, "--out", tmp_path / "run", *NANO, "--sft-steps", "1", "--grpo-steps", "1")  # refused, not taken for hand-made splits
    assert r.returncode == 2 and "did not finish" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()
    r = coinfluence(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in data_dir.iterdir()}


@pytest.mark.slow
def test_a_run_killed_while_it_generates_data_resumes_to_the_same_results(tmp_path):
    def train(out, **kill):
        return coinfluence("train", "--vanilla", "--out", out, *NANO, "--sft-steps", "2", "--grpo-steps", "2", **kill)

    assert train(tmp_path / "whole").returncode == 0
    assert killed(train(tmp_path / "run", kill_at="coinfluence.tasks.data:write_jsonl:3"))
    assert sorted(p.name for p in (tmp_path / "run" / "data").iterdir()) == ["rl_train.jsonl", "sft.jsonl"]
    r = coinfluence("train", "--resume", "--vanilla", "--out", tmp_path / "run", *NANO, "--sft-steps", "2", "--grpo-steps", "2")
    assert r.returncode == 0, r.stderr
    assert outcome(tmp_path / "run") == outcome(tmp_path / "whole")
    data = {p.name: p.read_bytes() for p in (tmp_path / "whole" / "data").iterdir()}
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / "data").iterdir()} == data
