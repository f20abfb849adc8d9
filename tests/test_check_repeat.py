"""figures/check_repeat.py: rerun a unit's first training steps and compare with its metrics."""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path

import pytest
from toy_data import coinfluence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "figures"))
import check_repeat  # noqa: E402


def test_first_difference_ignores_timing_and_finds_the_first_changed_value():
    recorded = [{"stage": "sft", "step": 10, "loss": 1.0, "time": 5.0, "tokens_per_second": 9.0},
                {"stage": "sft", "step": 20, "loss": 0.5, "lr": 0.1}]
    rerun = [{"stage": "sft", "step": 10, "loss": 1.0, "time": 7.0, "tokens_per_second": 3.0},
             {"stage": "sft", "step": 20, "loss": math.nextafter(0.5, 1.0), "lr": 0.1}]
    assert check_repeat.first_difference(recorded, rerun[:1]) is None
    diff = check_repeat.first_difference(recorded, rerun)
    assert (diff["step"], diff["key"], diff["recorded"]) == (20, "loss", 0.5)
    missing = check_repeat.first_difference(recorded, [{"stage": "sft", "step": 20, "loss": 0.5}])
    assert missing["key"] == "lr" and missing["rerun"] is None


def test_subcommand_and_retarget_of_recorded_commands():
    train = "coinfluence --threads 1 train --data runs/u/data --out runs/u --seed 0"
    assert check_repeat.subcommand(train) == "train"
    assert check_repeat.subcommand("coinfluence data --out runs/u/data") == "data"
    args = check_repeat.retarget(train, "runs/u", "/tmp/x", threads=2)
    assert args == ["--threads", "2", "train", "--data", "/tmp/x/data", "--out", "/tmp/x", "--seed", "0"]
    assert check_repeat.retarget("coinfluence data --out runs/u2", "runs/u", "/tmp/x", None)[2] == "runs/u2"


def _recorded_unit(tmp_path: Path) -> Path:
    """A unit whose recorded commands are a nano data + SFT + GRPO run, run once for real."""
    run = tmp_path / "orig"
    commands = [
        f"coinfluence data --out {run}/data --sft-size 40 --rl-size 8 --eval-size 4 --seed 0",
        f"coinfluence --threads 1 train --data {run}/data --out {run} --seed 0 --preset nano --sft-steps 30 "
        "--eval-steps 0 --eval-size 2 --grpo-steps 3 --prompts-per-step 2 --num-generations 4 "
        "--max-completion-length 8 --no-progress",
    ]
    for c in commands:
        r = coinfluence(*shlex.split(c)[1:])
        assert r.returncode == 0, r.stderr
    unit = tmp_path / "unit"
    unit.mkdir()
    (unit / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
    (unit / "unit.json").write_text(json.dumps({"run": str(run), "commands": commands,
                                                "machine": {"threads": 1, "cpu": "test"}}))
    return unit


@pytest.mark.slow  # nine CLI processes: about a minute of CPU
def test_rerun_of_a_unit_repeats_and_a_changed_record_is_found(tmp_path, capsys):
    unit = _recorded_unit(tmp_path)
    assert check_repeat.main([str(unit), "--sft-steps", "20", "--out", str(tmp_path / "rerun")]) == 0
    out = capsys.readouterr().out
    assert "repeat: every compared value is equal, up to SFT step 20" in out
    rerun = check_repeat.read_rows(tmp_path / "rerun" / "metrics.jsonl")
    assert {r["step"] for r in rerun if r["stage"] == "sft"} >= {10, 20}  # stopped at step 20, not before
    rows = check_repeat.read_rows(unit / "metrics.jsonl")
    row = next(r for r in rows if r["stage"] == "sft" and r["step"] == 20)
    row["loss"] = math.nextafter(row["loss"], 0.0)
    (unit / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert check_repeat.main([str(unit), "--sft-steps", "20", "--out", str(tmp_path / "rerun2")]) == 1
    assert "differs first at sft step 20, loss" in capsys.readouterr().out
    # GRPO alone from the unit's SFT model: sampling, rewards and updates repeat too
    assert check_repeat.main([str(unit), "--grpo-steps", "2", "--out", str(tmp_path / "rerun3")]) == 0
    assert "repeat: every compared value is equal, up to GRPO step 2" in capsys.readouterr().out
    rows = check_repeat.read_rows(unit / "metrics.jsonl")
    row = next(r for r in rows if r["stage"] == "grpo" and r["step"] == 2)
    row["reward"] += 0.25
    (unit / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert check_repeat.main([str(unit), "--grpo-steps", "2", "--out", str(tmp_path / "rerun4")]) == 1
    assert "differs first at grpo step 2, reward" in capsys.readouterr().out


def test_bad_input_ends_with_one_line(tmp_path):
    r = coinfluence_script(str(tmp_path))
    assert r.returncode != 0 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def coinfluence_script(*args):
    import subprocess

    script = Path(__file__).resolve().parent.parent / "figures" / "check_repeat.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
