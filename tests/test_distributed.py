"""Data parallelism: 2 gloo processes give the numbers of 1 process (SFT, GRPO, analyze)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from toy_data import toy_rows, toy_texts

from coinfluence import distributed as dist_
from coinfluence.errors import UserError
from coinfluence.influence.analyze import AnalyzeOptions, run_analysis
from coinfluence.io import write_jsonl
from coinfluence.models.loading import load_model
from coinfluence.models.tokenizer import build_tokenizer
from coinfluence.training.grpo import GRPOConfig, train_grpo
from coinfluence.training.rollout import sample
from coinfluence.training.sft import SFTConfig, train_sft

ROWS = toy_rows(12, seed=3)
RL_ROWS = ROWS[:6]  # few, so that the warm start below learns them quickly
SFT = SFTConfig(max_steps=8, learning_rate=1e-2, tokens_per_batch=300, gradient_accumulation_steps=2, logging_steps=1,
                eval_steps=0, eval_size=0, save_steps=4)
# A start for GRPO and the analysis whose groups on RL_ROWS mix right and wrong answers.
WARM = SFTConfig(max_steps=100, learning_rate=1e-2, logging_steps=10, eval_steps=0, eval_size=0, save_steps=0)
# scale_rewards "batch" makes the advantages depend on every rank's rewards; 5 queries split 3 + 2.
GRPO = GRPOConfig(max_steps=2, prompts_per_step=5, num_generations=4, max_completion_length=64, learning_rate=1e-3,
                  warmup_steps=0, eval_steps=0, eval_size=0, save_steps=1, micro_batch_size=3, scale_rewards="batch")


def run_all(out: Path, sft_from: Path) -> None:
    """SFT into OUT/sft from scratch, then GRPO into OUT/grpo and the analysis into OUT/analysis from the
    checkpoint ``sft_from``."""
    tok = build_tokenizer(toy_texts(ROWS))
    model, _ = load_model("nano", tok, seed=0)
    train_sft(SFT, model, tok, ROWS, [], out, progress=False)
    model, tok = load_model(sft_from)
    train_grpo(GRPO, model, tok, RL_ROWS, None, out, progress=False)
    # 5 train queries split 3 + 2 and 3 target queries split 2 + 1 (one micro-batch each side).
    write_jsonl(out / "queries.jsonl", RL_ROWS)
    run_analysis(AnalyzeOptions(ckpt=str(sft_from), train=str(out / "queries.jsonl"), targets=str(out / "queries.jsonl"), queries=5,
                                targets_n=3, num_generations=4, max_completion_length=64, save_kernel=True, chunk_size=2,
                                out=str(out / "analysis")), progress=False)


def _worker(rank: int, world: int, port: int, out: Path, sft_from: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert dist_.init_from_env("auto") == "cpu" and dist.get_backend() == "gloo"
    try:
        with pytest.raises(UserError, match="prompts_per_step"):
            train_grpo(GRPOConfig(prompts_per_step=1), None, None, ROWS, None, out)
        run_all(out, sft_from)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_on_ranks(world: int, out: Path, sft_from: Path) -> None:
    mp.start_processes(_worker, args=(world, free_port(), out, sft_from), nprocs=world, start_method="spawn")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one, two, warm = (tmp_path_factory.mktemp(name) for name in ("one", "two", "warm"))
    torch.set_num_threads(1)
    tok = build_tokenizer(toy_texts(ROWS))
    model, _ = load_model("nano", tok, seed=0)
    train_sft(WARM, model, tok, RL_ROWS, [], warm, progress=False)
    run_all(one, warm / "sft")
    run_on_ranks(2, two, warm / "sft")
    return one, two, warm


def relative_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp(min=1e-12)) for k in a)


def metric_rows(run: Path, stage: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["stage"] == stage]


def assert_same_metrics(one: Path, two: Path, stage: str, keys: tuple[str, ...]) -> None:
    rows_one, rows_two = metric_rows(one, stage), metric_rows(two, stage)
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two] and rows_one
    for a, b in zip(rows_one, rows_two):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), (stage, a["step"], key)


def test_sft_on_two_ranks_takes_the_steps_of_one(runs):
    one, two, _ = runs
    # Rank 0 wrote the checkpoints, once.
    assert sorted(p.name for p in (two / "sft-checkpoints").iterdir()) == ["checkpoint-000004", "checkpoint-000008"]
    gap = relative_gap(load_file(two / "sft" / "model.safetensors"), load_file(one / "sft" / "model.safetensors"))
    assert gap <= 1e-5
    # The pre-clip gradient norm and the loss see the whole global batch (a missed reduction halves them).
    assert_same_metrics(one, two, "sft", ("loss", "grad_norm", "num_tokens", "epoch"))


def test_grpo_on_two_ranks_takes_the_steps_of_one(runs):
    one, two, warm = runs
    assert sorted(p.name for p in (two / "grpo").iterdir()) == ["final", "step-000001", "step-000002"]
    gap = relative_gap(load_file(two / "grpo" / "final" / "model.safetensors"), load_file(one / "grpo" / "final" / "model.safetensors"))
    assert gap <= 1e-5
    start = load_file(warm / "sft" / "model.safetensors")
    assert relative_gap(load_file(one / "grpo" / "final" / "model.safetensors"), start) > 1e-5, "GRPO did not move the weights"
    rows = metric_rows(one, "grpo")
    assert any(r["frac_reward_zero_std"] < 1 for r in rows), "no group had a reward spread: the test would be vacuous"
    # (On-policy the surrogate loss is 0 up to rounding, so it is not compared.)
    assert_same_metrics(one, two, "grpo", ("reward", "reward_std", "accuracy", "alpha_hist", "completions/mean_length",
                                           "completions/clipped_ratio", "entropy", "clip_ratio", "grad_norm"))


def test_a_shard_of_a_batch_samples_the_rows_of_the_whole_batch():
    tok = build_tokenizer(toy_texts(ROWS))
    model, _ = load_model("nano", tok, seed=0)
    prompts = [tok.encode(r["prompt"]) for r in ROWS[:6]]
    kw = dict(max_new_tokens=12, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    whole = sample(model, prompts, generator=torch.Generator().manual_seed(5), **kw).completions()
    parts = [sample(model, prompts[a:b], generator=torch.Generator().manual_seed(5), rows_of=(a, 6), **kw).completions()
             for a, b in ((0, 4), (4, 6))]
    assert parts[0] + parts[1] == whole
    unsharded = sample(model, prompts[4:6], generator=torch.Generator().manual_seed(5), **kw).completions()
    assert unsharded != whole[4:6], "the seed alone decides these rows: the test would be vacuous"


def test_split_sizes_cover_every_item_once():
    assert dist_.split_sizes(5, 2) == [3, 2]
    assert dist_.split_sizes(2, 3) == [1, 1, 0]
    assert dist_.backend_for(torch.device("cpu")) == "gloo" and dist_.backend_for(torch.device("cuda", 0)) == "nccl"


def test_analyze_on_two_ranks_writes_the_tables_of_one(runs):
    one, two, _ = runs
    queries = pd.read_parquet(two / "analysis" / "queries.parquet")
    expected = pd.read_parquet(one / "analysis" / "queries.parquet")
    assert (queries["role"] == "train").sum() == 5 and queries["delta_J"].abs().max() > 0
    assert queries["query_id"].tolist() == expected["query_id"].tolist()
    for column in ("alpha", "n_correct", "weight", "K_plus", "K_minus", "co_influence", "delta_J"):
        scale = np.nanmax(np.abs(expected[column].to_numpy(float)))
        np.testing.assert_allclose(queries[column], expected[column], rtol=1e-6, atol=1e-6 * scale, err_msg=column)
    kernel, expected_kernel = np.load(two / "analysis" / "kernel.npy"), np.load(one / "analysis" / "kernel.npy")
    assert kernel.shape == expected_kernel.shape == (12, 20)
    np.testing.assert_allclose(kernel, expected_kernel, rtol=1e-6, atol=1e-6 * np.abs(expected_kernel).max())


@pytest.mark.slow
def test_train_and_analyze_under_torchrun(tmp_path):
    cli = [sys.executable, "-m", "coinfluence_cli.main", "--threads", "1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                "-m", "coinfluence_cli.main", "--threads", "1", "--device", "cpu"]
    data, out = tmp_path / "data", tmp_path / "run"
    made = subprocess.run([*cli, "data", "--out", str(data), "--sft-size", "40", "--rl-size", "20", "--eval-size", "4"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    small = ["--data", str(data), "--out", str(out), "--preset", "nano", "--sft-steps", "4", "--grpo-steps", "2", "--prompts-per-step", "2",
             "--num-generations", "2", "--max-completion-length", "8", "--eval-size", "2", "--eval-steps", "0", "--no-progress"]
    bad = subprocess.run([*torchrun, "train", *small], capture_output=True, text=True)
    assert bad.returncode != 0 and "error: sft option gradient_accumulation_steps" in bad.stderr and not out.exists()
    trained = subprocess.run([*torchrun, "train", *small, "--gradient-accumulation-steps", "2"], capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    stages = [json.loads(line)["stage"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert stages.count("sft") == 1 and stages.count("grpo") == 2  # written once, by rank 0
    assert set(json.loads((out / "eval.json").read_text())["checkpoints"]) == {"sft", "grpo/final"}
    assert trained.stdout.count("metrics: ") == 1
    analyzed = subprocess.run([*torchrun, "analyze", "--run-dir", str(out), "--ckpt", str(out / "grpo" / "final"), "--queries", "4", "--targets-n", "2", "--quiet"],
                              capture_output=True, text=True)
    assert analyzed.returncode == 0, analyzed.stderr
    assert analyzed.stdout.count("wrote ") == 1
    assert len(pd.read_parquet(out / "analysis" / "grpo-final" / "queries.parquet")) == 6
