"""What users bring from other tools: Hugging Face `datasets` (saved DatasetDict / Dataset dirs,
single JSONL/Parquet files wherever data is read) and TensorBoard (``--report-to tensorboard``).

Both packages are optional extras; the tests that need one skip with the reason when it is absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from coinfluence.errors import UserError
from coinfluence.io import data_splits, is_one_split, read_jsonl, read_rows
from coinfluence.run import TENSORBOARD_DIR
from coinfluence.training.metrics import log_metrics, metric_sink, scalars

try:
    import datasets
except ImportError:  # the hf extra
    datasets = None
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError:  # the tensorboard extra
    EventAccumulator = None

needs_datasets = pytest.mark.skipif(datasets is None, reason="the datasets package is not installed (pip install 'coinfluence[hf]')")
needs_tensorboard = pytest.mark.skipif(EventAccumulator is None,
                                       reason="the tensorboard package is not installed (pip install 'coinfluence[tensorboard]')")
SMALL_DATA = ["--sft-size", "12", "--rl-size", "6", "--eval-size", "3"]


def cli(*args):
    """`coinfluence ARGS` in this process (a UserError is left in ``result.exception``)."""
    from typer.testing import CliRunner

    from coinfluence_cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def jsonl_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jsonl") / "data"
    assert cli("data", "--out", out, *SMALL_DATA).exit_code == 0
    return out


@pytest.fixture(scope="module")
def hf_data(tmp_path_factory) -> Path:
    if datasets is None:
        pytest.skip("the datasets package is not installed (pip install 'coinfluence[hf]')")
    out = tmp_path_factory.mktemp("hf") / "data"
    r = cli("data", "--out", out, "--format", "hf", *SMALL_DATA)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def checkpoint(jsonl_data, tmp_path_factory) -> Path:
    """An untrained nano model with the task's tokenizer: enough for evaluation to run."""
    from coinfluence.models import build_tokenizer, load_model
    from coinfluence.training.checkpoint import save_model_dir

    rows = [r for split in data_splits(jsonl_data).values() for r in read_jsonl(split)]
    tok = build_tokenizer([t for r in rows for t in (r["prompt"], r["completion"])])
    model, tok = load_model("nano", tok, seed=0)
    return save_model_dir(tmp_path_factory.mktemp("ckpt") / "model", model, tok)


# ----------------------------------------------------------------------------- datasets


@needs_datasets
def test_data_format_hf_is_a_dataset_dict_with_the_jsonl_rows(hf_data, jsonl_data):
    loaded = datasets.load_from_disk(str(hf_data))
    assert isinstance(loaded, datasets.DatasetDict)
    assert list(loaded) == ["sft", "rl_train", "val_id", "val_ood", "test_id", "test_ood"]
    for split, dataset in loaded.items():
        plain = read_jsonl(jsonl_data / f"{split}.jsonl")  # same seed, same rows
        keys = ("id", "prompt", "completion", "answer")
        assert [{k: r[k] for k in keys} for r in dataset.to_list()] == [{k: r[k] for k in keys} for r in plain]
    assert json.loads((hf_data / "data_config.json").read_text())["format"] == "hf"


@needs_datasets
def test_every_kind_of_data_source_reads_the_same_rows(hf_data, jsonl_data, tmp_path):
    import pandas as pd

    expected = read_jsonl(jsonl_data / "val_id.jsonl")
    pd.DataFrame(expected).to_parquet(tmp_path / "val_id.parquet")
    datasets.Dataset.from_list(expected).save_to_disk(str(tmp_path / "saved"))
    for source in (jsonl_data / "val_id.jsonl", tmp_path / "val_id.parquet", hf_data / "val_id", tmp_path / "saved"):
        assert [r["prompt"] for r in read_rows(source)] == [r["prompt"] for r in expected], source
        assert is_one_split(source)
    assert set(data_splits(hf_data)) == set(data_splits(jsonl_data)) == {"sft", "rl_train", "val_id", "val_ood", "test_id", "test_ood"}
    assert data_splits(tmp_path / "saved") == {"saved": tmp_path / "saved"}
    assert data_splits(jsonl_data / "val_id.jsonl") == {"val_id": jsonl_data / "val_id.jsonl"}
    with pytest.raises(UserError, match="not one split"):
        read_rows(hf_data)


def test_a_dir_without_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="holds no data"):
        data_splits(tmp_path)
    with pytest.raises(UserError, match="not found"):
        data_splits(tmp_path / "missing")


def test_without_the_datasets_package_hf_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    r = cli("data", "--out", tmp_path / "d", "--format", "hf", *SMALL_DATA)
    assert isinstance(r.exception, UserError) and "pip install 'coinfluence[hf]'" in str(r.exception)
    assert not (tmp_path / "d").exists()


def test_eval_takes_a_jsonl_file_as_one_split_named_by_its_stem(checkpoint, jsonl_data, tmp_path):
    out = tmp_path / "run"
    r = cli("eval", "--ckpt", checkpoint, "--data", jsonl_data / "test_ood.jsonl", "--out", out, "--max-new-tokens", "4")
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "eval.json").read_text())["checkpoints"]["model"]
    assert list(saved) == ["test_ood"] and saved["test_ood"]["num_rows"] == len(read_jsonl(jsonl_data / "test_ood.jsonl"))
    wrong = cli("eval", "--ckpt", checkpoint, "--data", jsonl_data / "test_ood.jsonl", "--splits", "val_id", "--out", out)
    assert isinstance(wrong.exception, UserError) and "is one split, test_ood" in str(wrong.exception)


@needs_datasets
def test_eval_takes_a_saved_dataset_dict_and_a_saved_dataset(checkpoint, hf_data, tmp_path):
    out = tmp_path / "run"
    r = cli("eval", "--ckpt", checkpoint, "--data", hf_data, "--splits", "val_id,test_id", "--out", out, "--max-new-tokens", "4")
    assert r.exit_code == 0, r.output
    r = cli("eval", "--ckpt", checkpoint, "--data", hf_data / "val_ood", "--out", out, "--name", "again", "--max-new-tokens", "4")
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "eval.json").read_text())["checkpoints"]
    assert list(saved["model"]) == ["val_id", "test_id"] and list(saved["again"]) == ["val_ood"]
    missing = cli("eval", "--ckpt", checkpoint, "--data", hf_data, "--splits", "dev", "--out", out)
    assert isinstance(missing.exception, UserError) and "lacks the splits dev" in str(missing.exception)


@needs_datasets
def test_analyze_takes_saved_datasets_for_train_and_targets(checkpoint, hf_data, tmp_path):
    from coinfluence.influence.analyze import AnalyzeOptions, resolve_inputs

    out = tmp_path / "analysis"
    r = cli("analyze", "--ckpt", checkpoint, "--train", hf_data / "rl_train", "--targets", hf_data / "val_id", "--queries", "2",
            "--targets-n", "2", "--num-generations", "2", "--max-completion-length", "4", "--no-kernel", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_file"], summary["targets_file"]) == (str(hf_data / "rl_train"), str(hf_data / "val_id"))
    assert f"coinfluence report {out} --out {tmp_path / 'analysis-report.html'}" in r.stdout
    run = tmp_path / "run"  # a run whose recorded data is a saved DatasetDict
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"data": str(hf_data)}}))
    paths = resolve_inputs(AnalyzeOptions(ckpt=str(checkpoint), run=str(run)))
    assert (paths["train"], paths["targets"]) == (hf_data / "rl_train", hf_data / "val_id")


# ----------------------------------------------------------------------------- TensorBoard


def events(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return acc


@needs_tensorboard
def test_tensorboard_scalars_have_the_metric_names_of_the_jsonl(tmp_path):
    run = tmp_path / "run"
    with metric_sink(run, "tensorboard") as sink:
        for step in (10, 20):
            log_metrics(run, "sft", step, sink=sink, loss=3.0 / step, lr=1e-3, num_tokens=100 * step)
        for step in (1, 2, 3):
            log_metrics(run, "grpo", step, sink=sink, reward=step / 8, alpha_hist=[1, 2, 1], **{"completions/mean_length": 20.0 + step})
    rows = read_jsonl(run / "metrics.jsonl")
    for stage in ("sft", "grpo"):
        acc = events(run / TENSORBOARD_DIR / stage)
        logged = [r for r in rows if r["stage"] == stage]
        expected = {tag for r in logged for tag in scalars(r)}
        assert set(acc.Tags()["scalars"]) == expected
        for tag in expected:
            assert [(e.step, pytest.approx(e.value)) for e in acc.Scalars(tag)] == [(r["step"], scalars(r)[tag]) for r in logged]
    assert {"sft/loss", "sft/num_tokens", "grpo/reward", "grpo/completions/mean_length"} <= {t for r in rows for t in scalars(r)}
    assert not any("alpha_hist" in t or t.endswith("/time") for r in rows for t in scalars(r))


@needs_tensorboard
def test_a_resumed_run_shows_each_step_once(tmp_path):
    run = tmp_path / "run"
    with metric_sink(run, "tensorboard") as sink:
        for step in range(1, 6):
            log_metrics(run, "grpo", step, sink=sink, reward=0.1 * step)
    with metric_sink(run, "tensorboard") as sink:  # killed after step 5, resumed from its step-3 checkpoint
        for step in range(4, 7):
            log_metrics(run, "grpo", step, sink=sink, reward=1.0 + step)
    shown = [(e.step, e.value) for e in events(run / TENSORBOARD_DIR / "grpo").Scalars("grpo/reward")]
    assert shown == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.3)), (4, 5.0), (5, 6.0), (6, 7.0)]


def test_report_to_is_checked_before_work(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--report-to must be one of"):
        with metric_sink(tmp_path, "wandb"):
            pass
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    r = cli("train", "--out", tmp_path / "never", "--report-to", "tensorboard", "--no-progress")
    assert isinstance(r.exception, UserError) and "pip install 'coinfluence[tensorboard]'" in str(r.exception)
    assert not (tmp_path / "never").exists()


@needs_tensorboard
@needs_datasets
def test_train_on_a_saved_dataset_dict_reports_to_tensorboard(hf_data, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--stage", "sft", "--data", hf_data, "--out", out, "--preset", "nano", "--sft-steps", "4", "--eval-steps", "2",
            "--eval-size", "2", "--report-to", "tensorboard", "--no-progress")
    assert r.exit_code == 0, r.output
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["stage"] == "sft"]
    acc = events(out / TENSORBOARD_DIR / "sft")
    assert set(acc.Tags()["scalars"]) == {tag for row in rows for tag in scalars(row)} >= {"sft/loss", "sft/val_accuracy"}
    assert [e.step for e in acc.Scalars("sft/loss")] == [row["step"] for row in rows]
    assert f"tensorboard --logdir {out / TENSORBOARD_DIR}" in r.stdout
    assert f"coinfluence report {out} --out {out / 'report.html'}" in r.stdout
    assert json.loads((out / "config.json").read_text())["train"]["data"] == str(hf_data)
