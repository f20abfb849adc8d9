"""Faults a careless or hostile user causes: untrusted checkpoints, outputs over other files,
non-finite options, torn logs, concurrent runs and kills (issue 14)."""

import json
import os
import subprocess

import pytest
import torch
from toy_data import coinfluence, generated_data


def run(*args, cwd=None):
    return coinfluence("--threads", "1", *args, cwd=cwd)


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
    return generated_data(tmp_path_factory.mktemp("faults"), sft_size=24, rl_size=8)


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


# ----------------------------------------------------------------------------- cases 1-4: data loss


def cli(*args):
    """`coinfluence ARGS` in this process (a UserError is left in ``result.exception``)."""
    from typer.testing import CliRunner

    from coinfluence_cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def refused_in_process(result, text: str) -> bool:
    from coinfluence.errors import UserError

    return isinstance(result.exception, UserError) and text in str(result.exception)


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def victim(tmp_path):
    """A run-shaped dir: a nano checkpoint, data, a config and a file of the user's."""
    from coinfluence.io import write_json, write_jsonl
    from coinfluence.models.loading import load_model
    from coinfluence.training.checkpoint import save_model_dir
    from toy_data import toy_rows

    root = tmp_path / "victim"
    model, tok = load_model("nano")
    save_model_dir(root / "sft", model, tok)
    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in toy_rows(4, seed=1)]
    write_jsonl(root / "data" / "rl_train.jsonl", rows)
    write_jsonl(root / "data" / "val_id.jsonl", rows)
    write_json(root / "config.json", {"train": {"stage": "sft"}})
    (root / "notes.txt").write_text("mine")
    return root


ANALYZE = ["--queries", "2", "--targets-n", "2", "--num-generations", "2", "--max-completion-length", "2", "--quiet"]


def test_case1_analyze_never_writes_onto_its_run_or_into_a_full_dir(victim, tmp_path):
    before = snapshot(victim)
    r = cli("analyze", "--ckpt", victim / "sft", "--run", victim, "--out", victim, *ANALYZE)
    assert refused_in_process(r, "onto the input")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    r = cli("analyze", "--ckpt", victim / "sft", "--run", victim, "--out", other, *ANALYZE)
    assert refused_in_process(r, "--overwrite")
    r = cli("analyze", "--run", victim, "--all-checkpoints", "--out", victim.parent, "--overwrite", *ANALYZE)
    assert refused_in_process(r, "onto the input")
    assert snapshot(victim) == before and (other / "keep.txt").read_text() == "keep"


def test_case1_overwrite_replaces_only_the_analysis_files(tmp_path):
    from coinfluence.io import output_dir

    out = tmp_path / "an"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    (out / "summary.json").write_text("old")
    (out / "figures").mkdir()
    (out / "figures" / "old.png").write_text("old")
    with output_dir(out) as tmp:
        (tmp / "summary.json").write_text("new")
        (tmp / "figures").mkdir()
        (tmp / "figures" / "alpha_hist.png").write_text("new")
    assert (out / "keep.txt").read_text() == "keep" and (out / "summary.json").read_text() == "new"
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["alpha_hist.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_case2_score_never_writes_onto_its_input(tmp_path):
    from coinfluence.io import write_jsonl

    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, [{"prompt": "p", "completion": "<answer>3</answer>", "answer": 3}])
    before = rows.read_bytes()
    assert refused_in_process(cli("score", rows, "--out", rows), "onto the input")
    assert refused_in_process(cli("score", rows, "--out", rows, "--overwrite"), "onto the input")
    assert rows.read_bytes() == before
    (tmp_path / "scored.jsonl").write_text("old\n")
    assert refused_in_process(cli("score", rows, "--out", tmp_path / "scored.jsonl"), "--overwrite")
    assert cli("score", rows, "--out", tmp_path / "scored.jsonl", "--overwrite").exit_code == 0
    assert json.loads((tmp_path / "scored.jsonl").read_text())["reward"] == 1.0


def test_case3_eval_merges_splits_into_eval_json_and_records(tmp_path):
    from coinfluence.io import read_json, read_jsonl
    from coinfluence.models import build_tokenizer
    from coinfluence.training.evaluate import evaluate_checkpoint

    rows = [{"prompt": f"q{i}", "answer": i} for i in range(4)]
    tok = build_tokenizer([r["prompt"] for r in rows] + ["<answer>0</answer>"])

    def generate(model, tokenizer, prompt_ids, *, num_samples, **_):
        return [[tokenizer.encode("<answer>0</answer>", add_special_tokens=False)] * num_samples for _ in prompt_ids]

    evaluate_checkpoint(None, tok, {"test_id": rows, "test_ood": rows}, tmp_path, "sft", generate_fn=generate)
    evaluate_checkpoint(None, tok, {"val_id": rows}, tmp_path, "sft", limit=3, generate_fn=generate)
    saved = read_json(tmp_path / "eval.json")["checkpoints"]["sft"]
    assert set(saved) == {"test_id", "test_ood", "val_id"} and saved["test_id"]["num_rows"] == 4
    records = read_jsonl(tmp_path / "eval" / "sft.jsonl")
    assert [r["split"] for r in records].count("test_id") == 4 and [r["split"] for r in records].count("val_id") == 3


def test_case3_a_corrupt_eval_json_is_one_line_before_work(victim):
    (victim / "eval.json").write_text("{not json")
    r = cli("eval", "--ckpt", victim / "sft", "--data", victim / "data", "--splits", "val_id", "--limit", "1")
    assert refused_in_process(r, "eval.json: invalid JSON")


def test_case4_data_never_replaces_split_files_unless_asked(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "sft.jsonl").write_text("mine\n")
    small = ["--sft-size", "3", "--rl-size", "3", "--eval-size", "2"]
    assert refused_in_process(cli("data", "--out", out, *small), "--overwrite")
    os.chmod(out / "sft.jsonl", 0o444)
    assert refused_in_process(cli("data", "--out", out, *small, "--overwrite"), "read-only")
    assert (out / "sft.jsonl").read_text() == "mine\n"


# ----------------------------------------------------------------------------- cases 6-9: silent wrong results


@pytest.mark.parametrize("args", [
    ["train", "--learning-rate", "nan"], ["train", "--beta", "nan"], ["train", "--learning-rate", "inf"],
    ["train", "--temperature", "nan"], ["eval", "--ckpt", "x", "--data", "y", "--temperature", "nan"],
    ["analyze", "--temperature", "nan"], ["data", "--p-explore", "nan"],
])
def test_case6_non_finite_float_options_are_refused_before_work(args, tmp_path):
    out = tmp_path / "never"
    extra = ["--out", out] if args[0] in ("train", "data") else []
    assert refused_in_process(cli(*args, *extra), "must be a finite number")
    assert not out.exists()


def test_case7_weights_that_do_not_fill_the_config_are_refused(victim, tmp_path):
    import shutil

    from coinfluence.errors import UserError
    from coinfluence.models.loading import load_model

    bigger = shutil.copytree(victim / "sft", tmp_path / "bigger")
    config = json.loads((bigger / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (bigger / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="missing keys"):
        load_model(bigger)
    other = shutil.copytree(victim / "sft", tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                   "n_layer": 1, "n_embd": config["hidden_size"], "n_head": 2}))
    with pytest.raises(UserError, match="do not match its config.json|cannot load"):
        load_model(other)


def test_case8_resume_refuses_data_it_cannot_trust(tmp_path):
    from dataclasses import replace

    from coinfluence.errors import UserError
    from coinfluence.tasks.data import DataConfig, write_dataset
    from coinfluence.pipeline import check_data

    cfg = DataConfig(behaviours="both", sft_size=3, rl_size=3, eval_size=2)
    data = tmp_path / "run" / "data"
    write_dataset(data, cfg)
    assert check_data(None, data, cfg) is True
    with pytest.raises(UserError, match="behaviours='both' \\(now 'none'\\)"):
        check_data(None, data, replace(cfg, behaviours="none"))
    with open(data / "val_id.jsonl", "a") as f:
        f.write("\n")
    with pytest.raises(UserError, match="val_id.jsonl differs"):
        check_data(None, data, cfg)
    (data / "data_config.json").unlink()  # as a kill during generation leaves it: regenerated
    (data / "test_ood.jsonl").unlink()
    assert check_data(None, data, cfg) is False
    (data / "mine.txt").write_text("x")
    with pytest.raises(UserError, match="not generated data"):
        check_data(None, data, cfg)


def test_case8_resume_with_other_behaviours_is_refused_before_work(tmp_path):
    from coinfluence.tasks.data import DataConfig, write_dataset

    out = tmp_path / "run"
    write_dataset(out / "data", DataConfig(seed=0, behaviours="both", sft_size=3, rl_size=3, eval_size=2))
    before = snapshot(out)
    r = cli("train", "--resume", "--vanilla", "--out", out, "--no-progress")
    assert refused_in_process(r, "generated with other options")
    assert snapshot(out) == before


def test_case9_a_torn_metrics_line_is_dropped_and_resume_continues(tmp_path):
    from coinfluence.io import read_jsonl
    from coinfluence.plots.runs import read_metrics
    from coinfluence.training.metrics import drop_metrics_after, log_metrics

    for step in (1, 2, 3):
        log_metrics(tmp_path, "grpo", step, reward=0.5)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"stage": "grpo", "st')  # the disk filled mid-line
    assert list(read_metrics(tmp_path)["step"]) == [1, 2, 3]
    drop_metrics_after(tmp_path, "grpo", 2)
    log_metrics(tmp_path, "grpo", 3, reward=0.7)
    assert [(r["step"], r["reward"]) for r in read_jsonl(tmp_path / "metrics.jsonl")] == [(1, 0.5), (2, 0.5), (3, 0.7)]


def test_case9_a_second_process_on_a_run_is_refused(tmp_path):
    from coinfluence.io import run_lock

    out = tmp_path / "run"
    with run_lock(out):
        r = cli("train", "--out", out, "--no-progress", "--preset", "nano", "--sft-steps", "1")
    assert refused_in_process(r, "in use by another coinfluence process")
    with run_lock(out):  # released when the holder ends
        pass


def test_case9_a_lock_held_for_a_moment_is_waited_for_not_refused(tmp_path):
    # `run_lanes.py --status` probes a unit by taking its lock for an instant: a run starting
    # then must wait the instant out, not count the probe as another run.
    import threading

    from coinfluence.io import LOCK_PATIENCE_S, run_lock

    out = tmp_path / "run"
    taken, release = threading.Event(), threading.Event()

    def probe():
        with run_lock(out):
            taken.set()
            release.wait()

    holder = threading.Thread(target=probe)
    holder.start()
    taken.wait()
    threading.Timer(LOCK_PATIENCE_S / 5, release.set).start()
    with run_lock(out):
        assert release.is_set()
    holder.join()


def test_case9_stale_temporaries_are_removed(tmp_path):
    from coinfluence.io import remove_stale_temporaries

    (tmp_path / "sft-checkpoints" / ".checkpoint-000004.ab12.tmp").mkdir(parents=True)
    (tmp_path / ".metrics.jsonl.cd34.tmp").write_text("x")
    (tmp_path / "sft-checkpoints" / "checkpoint-000002").mkdir()
    remove_stale_temporaries(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["sft-checkpoints", "sft-checkpoints/checkpoint-000002"]


def test_case9_killed_before_the_first_checkpoint_resume_logs_each_step_once(tmp_path):
    from coinfluence.io import read_jsonl
    from coinfluence.models import build_tokenizer, load_model
    from coinfluence.training.sft import SFTConfig, train_sft
    from toy_data import toy_rows, toy_texts

    rows = toy_rows(8, seed=2)
    tok = build_tokenizer(toy_texts(rows))
    cfg = SFTConfig(max_steps=4, tokens_per_batch=300, logging_steps=1, eval_steps=0, eval_size=0, save_steps=0, seed=3)
    model, _ = load_model("nano", tok, seed=1)
    train_sft(cfg, model, tok, rows, [], tmp_path, progress=False, stop_after=2)
    model, _ = load_model("nano", tok, seed=1)
    train_sft(cfg, model, tok, rows, [], tmp_path, resume=True, progress=False)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- case 10: inputs that exhaust the machine


@pytest.mark.parametrize("args, message", [
    (["--sft-size", "99999999999999999999"], "at most"),
    (["--answer-aug", "1000"], "at most"),
    (["--op-id", "2-5", "--op-ood", "4-6"], "overlap"),
])
def test_case10_data_sizes_and_ranges_are_bounded(args, message, tmp_path):
    assert refused_in_process(cli("data", "--out", tmp_path / "d", *args), message)
    assert not (tmp_path / "d").exists()


def test_case10_a_prompt_longer_than_the_model_is_refused(victim):
    from coinfluence.errors import UserError
    from coinfluence.models.loading import check_prompt_lengths, load_model

    model, tok = load_model(victim / "sft")
    check_prompt_lengths(model, tok, ["How many apples"], 8)
    with pytest.raises(UserError, match="exceeds the model's"):
        check_prompt_lengths(model, tok, ["apples " * 1_000_000], 8)


# ----------------------------------------------------------------------------- tracebacks instead of one line


@pytest.fixture
def gpt2_run(tmp_path):
    """A tiny GPT-2 (Conv1D layers, which the layerwise engine cannot take) and rows for it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from coinfluence.io import write_jsonl
    from coinfluence.models import build_tokenizer
    from coinfluence.training.checkpoint import save_model_dir
    from toy_data import toy_rows, toy_texts

    rows = toy_rows(4, seed=1)
    tok = build_tokenizer(toy_texts(rows))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=16, n_layer=1, n_head=2, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    save_model_dir(tmp_path / "gpt2", GPT2LMHeadModel(config), tok)
    write_jsonl(tmp_path / "rows.jsonl", rows)
    return tmp_path


def test_vmap_features_of_a_gpt2_model_match_the_loop(gpt2_run):
    from coinfluence.influence import features as feat
    from coinfluence.models.loading import load_model

    model, tok = load_model(gpt2_run / "gpt2")
    prompts, completions = [[5, 6, 7, 8], [9, 10, 11]], [[12, 13], [14, 15, 16, 17]]
    knobs = dict(normalization="seq-mean", max_length=None, temperature=1.0)
    by_vmap = feat.features_vmap(model, prompts, completions, tok.pad_token_id, chunk_size=2, **knobs)
    by_loop = feat.features_loop(model, prompts, completions, tok.pad_token_id, **knobs)
    assert by_vmap.abs().sum() > 0 and torch.allclose(by_vmap, by_loop, atol=1e-5)


def test_analyze_runs_a_gpt2_model_on_the_default_engine(gpt2_run):
    rows = gpt2_run / "rows.jsonl"
    r = cli("analyze", "--ckpt", gpt2_run / "gpt2", "--train", rows, "--targets", rows, "--out", gpt2_run / "an", *ANALYZE)
    assert r.exit_code == 0, r.output
    assert json.loads((gpt2_run / "an" / "summary.json").read_text())["checkpoint"].endswith("gpt2")


def test_the_layerwise_engine_refuses_a_gpt2_model_before_sampling(gpt2_run, monkeypatch):
    import coinfluence.influence.analyze as analyze

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before refusing")

    monkeypatch.setattr(analyze, "sample_groups", no_sampling)
    rows = gpt2_run / "rows.jsonl"
    r = cli("analyze", "--ckpt", gpt2_run / "gpt2", "--train", rows, "--targets", rows, "--out", gpt2_run / "an", *ANALYZE,
            "--engine", "layerwise")
    assert refused_in_process(r, "layerwise"), r.exception
    assert not (gpt2_run / "an").exists()


def test_an_output_dir_of_dot_is_written_in_place(tmp_path, monkeypatch):
    from coinfluence.io import output_dir

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    inode = os.stat(".").st_ino
    with output_dir(".") as tmp:
        (tmp / "summary.json").write_text("{}")
    assert os.stat(".").st_ino == inode  # the working directory itself, not a new one swapped in
    assert sorted(p.name for p in here.iterdir()) == ["summary.json"] and [p.name for p in tmp_path.iterdir()] == ["here"]


def test_the_report_hint_for_out_dot_names_a_file_beside_it(tmp_path, monkeypatch):
    from coinfluence.plots.html_report import default_out

    (tmp_path / "an").mkdir()
    (tmp_path / "an" / "summary.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "an")
    assert default_out(".") == tmp_path / "an-report.html"


def test_analyze_out_dot_writes_into_the_working_directory(victim, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    r = cli("analyze", "--ckpt", victim / "sft", "--run", victim, "--out", ".", *ANALYZE)
    assert r.exit_code == 0, r.output
    assert (here / "summary.json").is_file() and f"--out {tmp_path / 'here-report.html'}" in r.output


# ----------------------------------------------------------------------------- disk full


def small_data(out):
    r = cli("data", "--out", out, "--sft-size", "24", "--rl-size", "8", "--eval-size", "4")
    assert r.exit_code == 0, r.output
    return out


def assert_checkpoint_intact(ckpt):
    from coinfluence.models.loading import load_model
    from coinfluence.training.checkpoint import load_trainer_state

    assert load_trainer_state(ckpt)["step"] == 2
    load_model(ckpt)


def test_a_disk_full_during_a_checkpoint_save_is_one_line_and_resume_continues(tmp_path, monkeypatch):
    import errno

    from coinfluence.io import read_jsonl

    data, out = small_data(tmp_path / "data"), tmp_path / "run"
    save, calls = torch.save, []

    def save_until_the_disk_fills(obj, path):
        calls.append(path)
        if len(calls) < 2:
            return save(obj, path)
        save(obj, path)
        os.truncate(path, os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    args = ["--threads", "1", "train", "--stage", "sft", "--data", data, "--out", out, *NANO]
    assert refused_in_process(cli(*args), "no space left on the device to write")
    assert_checkpoint_intact(out / "sft-checkpoints" / "checkpoint-000002")
    assert not list(out.rglob(".*.tmp")) and not (out / "sft").exists()
    monkeypatch.undo()  # space is back
    assert cli(*args[:5], "--resume", *args[5:]).exit_code == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [4] and (out / "sft" / "model.safetensors").exists()


def test_a_full_disk_inside_nested_writes_names_the_output_not_a_temporary(tmp_path):
    import errno

    from coinfluence.errors import UserError
    from coinfluence.io import atomic_path, output_dir

    def fill(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with pytest.raises(UserError, match=f"no space left on the device to write {tmp_path / 'an'};"):
        with output_dir(tmp_path / "an") as tmp, atomic_path(tmp / "figures" / "alpha_hist.png") as figure:
            fill(figure)
    assert not list(tmp_path.iterdir())


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MiB tmpfs (room for a nano run's first checkpoint, not its second); skipped where mount is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_resume_continues_when_space_returns(small_tmpfs, data_dir, sft_run):
    out = small_tmpfs / "run"
    args = ["train", "--stage", "sft", "--data", str(data_dir), "--out", str(out), *NANO]
    r = run(*args)
    assert refused(r) and "no space left on the device" in r.stderr, r.stderr
    assert_checkpoint_intact(out / "sft-checkpoints" / "checkpoint-000002")
    assert not list(out.rglob(".*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    r = run(*args[:3], "--resume", *args[3:])
    assert r.returncode == 0, r.stderr
    assert (out / "sft" / "model.safetensors").read_bytes() == (sft_run / "sft" / "model.safetensors").read_bytes()


# ----------------------------------------------------------------------------- outputs that cannot be written


def writing_commands(victim, out):
    """Every command that writes, with ``out`` where it writes, on the victim run's files."""
    gguf = victim / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    small = ["--num-generations", "2", "--max-completion-length", "2", "--quiet"]
    return {
        "data": ["data", "--out", out, "--sft-size", "3", "--rl-size", "3", "--eval-size", "2"],
        "score": ["score", victim / "data" / "val_id.jsonl", "--out", out],
        "train": ["train", "--stage", "grpo", "--from-sft", victim / "sft", "--data", victim / "data", "--out", out, "--no-progress"],
        "eval": ["eval", "--ckpt", victim / "sft", "--data", victim / "data", "--splits", "val_id", "--limit", "1", "--out", out],
        "analyze": ["analyze", "--ckpt", victim / "sft", "--run", victim, "--out", out, *ANALYZE],
        "lds": ["lds", "--ckpt", victim / "sft", "--run", victim, "--out", out, "--pool", "4", "--subsets", "3", *small],
        "plot": ["plot", victim, "--out", out],
        "report": ["report", victim, "--out", out / "report.html"],
        "models import": ["models", "import", "--gguf", gguf, "--out", out],
    }


COMMANDS = ["data", "score", "train", "eval", "analyze", "lds", "plot", "report", "models import"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_under_a_file_is_one_line_before_any_work(command, victim, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    args = writing_commands(victim, a_file / "out")[command]
    before = snapshot(victim)
    r = cli(*args)
    assert refused_in_process(r, f"{a_file} is a file, not a directory"), r.output
    assert a_file.read_text() == "mine" and snapshot(victim) == before


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A dir no write reaches: a read-only tmpfs for root (who ignores mode bits), else mode 555;
    where root cannot mount, mode 555 with os.access answering as for another user."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() == 0 and not subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                                                capture_output=True).returncode:
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
        return
    os.chmod(folder, 0o555)
    if os.geteuid() == 0:
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.path.samefile(p, folder) else access(p, mode, **kw))
    yield folder
    os.chmod(folder, 0o755)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_in_a_read_only_dir_is_one_line_before_any_work(command, victim, read_only_dir):
    args = writing_commands(victim, read_only_dir / "out")[command]
    before = snapshot(victim)
    r = cli(*args)
    assert refused_in_process(r, f"{read_only_dir} is not writable"), r.output
    assert not any(read_only_dir.iterdir()) and snapshot(victim) == before


def test_models_import_of_a_file_that_is_not_gguf_is_one_line(tmp_path):
    pytest.importorskip("gguf")
    not_gguf = tmp_path / "rows.jsonl"
    not_gguf.write_text('{"prompt": "p"}\n')
    r = cli("models", "import", "--gguf", not_gguf, "--out", tmp_path / "a")
    assert refused_in_process(r, "is not a GGUF file")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF" + bytes(4))
    assert refused_in_process(cli("models", "import", "--gguf", truncated, "--out", tmp_path / "b"), "cannot read the GGUF file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf", "rows.jsonl"]


def test_checkpoint_files_get_the_permissions_of_a_plain_write(tmp_path):
    """safetensors writes through a 0600 temporary file; a checkpoint's files all read as 0666 & ~umask."""
    from toy_data import toy_rows, toy_texts

    from coinfluence.models.loading import load_model
    from coinfluence.models.tokenizer import build_tokenizer
    from coinfluence.training.checkpoint import save_model_dir

    tok = build_tokenizer(toy_texts(toy_rows(4, seed=0)))
    model, _ = load_model("nano", tok, seed=0)
    old = os.umask(0o022)
    try:
        save_model_dir(tmp_path / "ckpt", model, tok, {"extra.json": {}})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o644}, modes
