"""figures/search.py: what it prints of a probe is computed from the probe's files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "figures" / "search.py"


@pytest.fixture
def search():
    sys.path.insert(0, str(SCRIPT.parent))
    import search as module

    return module


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_training_windows_skip_the_step_zero_row_and_end_at_each_milestone(search, tmp_path):
    rows = [{"stage": "grpo", "step": 0, "reward": None, "val_id_accuracy": 0.5}]
    rows += [{"stage": "grpo", "step": s, "reward": float(s), "entropy": 1.0} for s in range(1, 431)]
    write_rows(tmp_path / "metrics.jsonl", rows)
    windows = search.training_windows(tmp_path)
    assert [(a, b) for a, b, _ in windows] == [(1, 10), (191, 200), (391, 400), (421, 430)]
    assert windows[0][2] == {"reward": 5.5, "entropy": 1.0}  # steps 1-10, not 0-9
    assert windows[-1][2]["reward"] == sum(range(421, 431)) / 10


def test_verdict_shares_largest_first(search):
    assert search.verdict_shares({"accuracy": 0.5, "verdict/correct": 0.25, "verdict/wrong_inputs": 0.75}) == \
        "wrong_inputs 75.0, correct 25.0"
    assert search.verdict_shares({"accuracy": 0.5}) == ""


def test_paired_gains_count_rows_gained_and_lost(search, tmp_path):
    run, probe = tmp_path / "run", tmp_path / "probe"
    probe.mkdir()
    verified = {"sft": {0, 1}, "grpo/final": {1, 2, 3}}
    for ckpt, ok in verified.items():
        write_rows(run / "eval" / (ckpt.replace("/", "_") + ".jsonl"),
                   [{"split": "test_id", "id": f"r{i}", "verdict": "correct" if i in ok else "wrong_inputs"} for i in range(10)]
                   + [{"split": "test_ood", "id": "o0", "verdict": "correct"}])
    record = search.record_rows(run, list(verified), probe)
    assert record["sft"] == {"rows": 10, "verified": ["r0", "r1"]}
    [line] = search.paired_gains(record)
    assert line.startswith("grpo/final - sft: +10.0 [") and "(2 rows gained, 1 lost)" in line
    mean, lo, hi = (float(x) for x in line.split(": ")[1].replace("[", "").replace("]", "").replace(",", "").split()[:3])
    assert lo < mean < hi
    assert "step-verified test_id, grpo/final - sft: +10.0" in search.describe(probe)


def test_rows_without_the_eval_records_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rows", str(tmp_path), str(tmp_path), "sft", "grpo/final"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "missing: ['sft', 'grpo/final']" in proc.stderr.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []
