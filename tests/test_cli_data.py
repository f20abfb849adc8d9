"""`coinfluence data` and `coinfluence score` as a user runs them."""

import json
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "coinfluence_cli.main", *args], capture_output=True, text=True)


def test_data_then_score_reports_full_accuracy(tmp_path):
    out = tmp_path / "data"
    r = run("data", "--out", str(out), "--sft-size", "40", "--rl-size", "40", "--eval-size", "20", "--stats")
    assert r.returncode == 0, r.stderr
    assert "test_ood" in r.stdout and "attempts" in r.stdout
    for split in ("sft", "rl_train", "val_id", "val_ood", "test_id", "test_ood"):
        assert (out / f"{split}.jsonl").is_file()
    config = json.loads((out / "data_config.json").read_text())
    assert config["data"]["behaviours"] == "both" and config["counts"]["sft"] == 40
    r = run("score", str(out / "sft.jsonl"), "--json", "--out", str(tmp_path / "scored.jsonl"))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert {k: summary[k] for k in ("n", "accuracy", "step_accuracy", "faithful_share", "verdicts")} == {
        "n": 40, "accuracy": 1.0, "step_accuracy": 1.0, "faithful_share": 1.0, "verdicts": {"correct": 40}}
    assert summary["answer_stated"] == summary["guess/stated"]  # the reference solutions answer correctly
    assert len((tmp_path / "scored.jsonl").read_text().splitlines()) == 40


def test_score_counts_wrong_rows(tmp_path):
    out = tmp_path / "data"
    assert run("data", "--out", str(out), "--sft-size", "20", "--rl-size", "5", "--eval-size", "5").returncode == 0
    rows = [json.loads(l) for l in (out / "sft.jsonl").read_text().splitlines()]
    for row in rows[:5]:
        row["completion"] = row["completion"].replace(f"<answer>{row['answer']}</answer>", "<answer>999</answer>")
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = json.loads(run("score", str(tmp_path / "mixed.jsonl"), "--json").stdout)
    assert summary["accuracy"] == 0.75 and summary["verdicts"]["wrong_final_answer"] == 5
    # by the steps a solution needs: the same rows, the five wrong ones among them
    by_steps = {k.split("/")[1]: v for k, v in summary.items() if k.startswith("steps/") and k.endswith("/num_rows")}
    assert sum(by_steps.values()) == 20
    assert sum(summary[f"steps/{k}/accuracy"] * n for k, n in by_steps.items()) == pytest.approx(15)


def test_threads_option_sets_torch_threads(tmp_path):
    code = ("import sys, torch; from coinfluence_cli.main import app; "
            "sys.argv = ['coinfluence', '--threads', '1', 'score', sys.argv[1]]; "
            "app(standalone_mode=False); print('threads', torch.get_num_threads())")
    out = tmp_path / "d"
    assert run("data", "--out", str(out), "--sft-size", "5", "--rl-size", "5", "--eval-size", "5").returncode == 0
    r = subprocess.run([sys.executable, "-c", code, str(out / "sft.jsonl")], capture_output=True, text=True,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("threads 1")


def test_parquet_format(tmp_path):
    import pandas as pd

    out = tmp_path / "pq"
    r = run("data", "--out", str(out), "--sft-size", "10", "--rl-size", "10", "--eval-size", "5", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out / "sft.parquet")
    assert len(df) == 10 and {"prompt", "completion", "answer", "meta"} <= set(df.columns)
    assert json.loads(run("score", str(out / "sft.parquet"), "--json").stdout)["accuracy"] == 1.0


def test_bad_input_is_one_line_and_nonzero_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    for args in (
        ["data", "--out", str(out), "--op-id", "4-2"],
        ["data", "--out", str(out), "--op-ood", "5-99"],
        ["data", "--out", str(out), "--preset", "huge"],
        ["data", "--out", str(out), "--rl-size", "-3"],
        ["data", "--out", str(out), "--op-id", "two"],
        ["score", str(tmp_path / "missing.jsonl")],
        ["--threads", "0", "data", "--out", str(out)],
    ):
        r = run(*args)
        assert r.returncode != 0
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:"), r.stderr
        assert "Traceback" not in r.stderr
    assert not out.exists()


def test_the_cli_starts_without_torch():
    """Every command imports its heavy libraries when it runs, so bad input and --help answer at once
    (each CLI test spawns a process: a 15 s import in each made the suite crawl)."""
    import subprocess
    import sys

    code = "import sys, coinfluence_cli.main; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
