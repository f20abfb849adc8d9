"""`coinfluence train` end to end on a nano model and a small data dir."""

import json

import pytest
from toy_data import coinfluence, generated_data


def run(*args):
    return coinfluence(*args)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return generated_data(tmp_path_factory.mktemp("d"), sft_size=40, rl_size=20)


SMALL = ["--preset", "nano", "--sft-steps", "6", "--grpo-steps", "2", "--prompts-per-step", "2", "--num-generations", "2",
         "--max-completion-length", "8", "--eval-size", "2", "--eval-steps", "0", "--no-progress"]


def test_train_all_then_resume_then_grpo_from_sft(data_dir, tmp_path):
    out = tmp_path / "run"
    r = run("train", "--data", str(data_dir), "--out", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    assert (out / "sft" / "model.safetensors").exists() and (out / "grpo" / "final" / "model.safetensors").exists()
    assert (out / "grpo" / "step-000002" / "trainer_state.pt").exists()
    stages = [json.loads(l)["stage"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert "sft" in stages and stages.count("grpo") == 2
    evals = json.loads((out / "eval.json").read_text())["checkpoints"]
    assert set(evals) == {"sft", "grpo/final"} and set(evals["sft"]) == {"test_id", "test_ood"}
    assert str(out) in r.stdout

    again = run("train", "--data", str(data_dir), "--out", str(out), *SMALL)
    assert again.returncode != 0 and again.stderr.startswith("error:") and "--resume" in again.stderr
    resumed = run("train", "--data", str(data_dir), "--out", str(out), "--resume", *SMALL)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(l)["stage"] for l in (out / "metrics.jsonl").read_text().splitlines()].count("grpo") == 2

    rl = run("train", "--stage", "grpo", "--from-sft", str(out / "sft"), "--data", str(data_dir), "--out", str(tmp_path / "rl"), *SMALL)
    assert rl.returncode == 0, rl.stderr
    assert (tmp_path / "rl" / "grpo" / "final" / "config.json").exists() and not (tmp_path / "rl" / "sft").exists()
    recorded = json.loads((tmp_path / "rl" / "config.json").read_text())["train"]
    assert recorded["model"] == recorded["from_sft"] == str(out / "sft")
    assert recorded["data_config"]["sft_size"] == 40  # read from the given data dir


def test_grpo_stage_after_sft_stage_keeps_the_sft_record(data_dir, tmp_path):
    out = tmp_path / "split"
    assert run("train", "--stage", "sft", "--data", str(data_dir), "--out", str(out), *SMALL).returncode == 0
    r = run("train", "--stage", "grpo", "--data", str(data_dir), "--out", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    recorded = json.loads((out / "config.json").read_text())["train"]
    assert recorded["model"] == "nano" and recorded["stage"] == "all" and "rl_data" not in recorded


@pytest.mark.parametrize("args, message", [
    (["--stage", "rl"], "--stage"),
    (["--bridge", "--vanilla"], "contradict"),
    (["--stage", "grpo"], "sft not found"),
    (["--stage", "grpo", "--from-sft", "/nonexistent"], "not found"),
    (["--num-generations", "1"], "num_generations"),
    (["--loss-type", "ppo"], "loss_type"),
])
def test_bad_train_options_fail_before_work(tmp_path, args, message):
    out = tmp_path / "never"
    r = run("train", "--out", str(out), "--no-progress", *args)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()
