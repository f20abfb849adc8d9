"""Faults a careless or hostile user causes: untrusted checkpoints, outputs over other files,
non-finite options, torn logs, concurrent runs and kills (issue 14)."""

import json
import os
import subprocess
import sys

import pytest
import torch


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "coinfluence_cli.main", "--threads", "1", *args],
                          capture_output=True, text=True, cwd=cwd)


def one_line_error(result) -> bool:
    return result.returncode == 2 and result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def refused(result) -> bool:
    """Exit 2 with an ``error:`` line last (progress lines may come before it) and no traceback."""
    lines = result.stderr.strip().splitlines()
    return result.returncode == 2 and lines[-1].startswith("error:") and "Traceback" not in result.stderr


NANO = ["--preset", "nano", "--sft-steps", "4", "--save-steps", "2", "--grpo-steps", "2", "--prompts-per-step", "2",
        "--num-generations", "2", "--max-completion-length", "8", "--eval-size", "2", "--eval-steps", "0", "--no-progress"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "data"
    r = run("data", "--out", str(out), "--sft-size", "24", "--rl-size", "8", "--eval-size", "4")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def sft_run(data_dir, tmp_path_factory):
    """A finished nano SFT run (with its checkpoints); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("faults") / "run"
    r = run("train", "--stage", "sft", "--data", str(data_dir), "--out", str(out), *NANO)
    assert r.returncode == 0, r.stderr
    return out


def copy_run(run_dir, dest):
    import shutil

    shutil.copytree(run_dir, dest)
    return dest


# ----------------------------------------------------------------------------- case 5: code execution


class RunsCode:
    """Unpickling this calls os.system: what a crafted trainer_state.pt does to a pickle loader."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant_crafted_state(ckpt, marker):
    torch.save({"optimizer": RunsCode(marker), "scheduler": {}, "rng": {}, "step": 2}, ckpt / "trainer_state.pt")


def test_the_crafted_state_runs_code_under_a_pickle_loader(tmp_path):
    marker = tmp_path / "pwned"
    plant_crafted_state(tmp_path, marker)
    torch.load(tmp_path / "trainer_state.pt", weights_only=False)
    assert marker.exists()  # so the refusals below are real refusals


@pytest.mark.slow
def test_resume_refuses_a_crafted_trainer_state(sft_run, data_dir, tmp_path):
    import shutil

    run_dir = copy_run(sft_run, tmp_path / "run")
    shutil.rmtree(run_dir / "sft")  # as if killed before the end: resume reads the newest checkpoint
    latest = sorted((run_dir / "sft-checkpoints").iterdir())[-1]
    marker = tmp_path / "pwned"
    plant_crafted_state(latest, marker)
    r = run("train", "--stage", "sft", "--resume", "--data", str(data_dir), "--out", str(run_dir), *NANO)
    assert refused(r) and "trainer_state.pt" in r.stderr, r.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_analyze_adam_refuses_a_crafted_trainer_state(sft_run, data_dir, tmp_path):
    run_dir = copy_run(sft_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    plant_crafted_state(run_dir / "sft", marker)
    r = run("analyze", "--ckpt", str(run_dir / "sft"), "--train", str(data_dir / "rl_train.jsonl"),
            "--targets", str(data_dir / "val_id.jsonl"), "--queries", "2", "--targets-n", "2", "--num-generations", "2",
            "--max-completion-length", "4", "--precondition", "adam", "--out", str(tmp_path / "an"), "--quiet")
    assert refused(r) and "trainer_state.pt" in r.stderr, r.stderr
    assert not marker.exists() and not (tmp_path / "an").exists()


def test_loading_a_crafted_trainer_state_is_refused(tmp_path):
    from coinfluence.errors import UserError
    from coinfluence.training.checkpoint import load_trainer_state

    marker = tmp_path / "pwned"
    plant_crafted_state(tmp_path, marker)
    with pytest.raises(UserError, match="could run code"):
        load_trainer_state(tmp_path)
    assert not marker.exists()


def test_trainer_state_round_trips_under_weights_only(tmp_path):
    import random

    import numpy as np

    from coinfluence.training import checkpoint as ckpt_io

    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    saved = ckpt_io.rng_states()
    torch.save({"rng": saved}, tmp_path / "trainer_state.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ckpt_io.restore_rng_states(ckpt_io.load_trainer_state(tmp_path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_trainer_state_of_the_older_format_still_loads(tmp_path):
    import random

    import numpy as np

    from coinfluence.training import checkpoint as ckpt_io

    np.random.seed(7)
    torch.save({"rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}},
               tmp_path / "trainer_state.pt")
    expected = np.random.rand()
    np.random.seed(0)
    ckpt_io.restore_rng_states(ckpt_io.load_trainer_state(tmp_path)["rng"])
    assert np.random.rand() == expected
