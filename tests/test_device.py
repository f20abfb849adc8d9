"""``--device``: choosing where models run, and CPU == GPU for every stage.

The device choice is checked on every machine. The CPU-vs-GPU comparisons need a CUDA GPU
and run where torch sees one (they were run on an H100; see the README).
"""

import copy
import json
import subprocess
import sys

import pytest
import torch
from toy_data import toy_rows, toy_texts

from coinfluence import device as dev
from coinfluence.errors import UserError
from coinfluence.influence import features as feat
from coinfluence.influence.analyze import sample_groups
from coinfluence.influence.layerwise import features_layerwise
from coinfluence.influence.step import delta_J_aggregated
from coinfluence.models.format import encode_prompt
from coinfluence.models.loading import load_model
from coinfluence.models.tokenizer import build_tokenizer
from coinfluence.training.grpo import GRPOConfig, train_grpo
from coinfluence.training.rollout import sample
from coinfluence.training.sft import SFTConfig, train_sft

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="compares CPU with a CUDA GPU")
ROWS = toy_rows(12, seed=3)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "coinfluence_cli.main", *args], capture_output=True, text=True)


def test_device_names_resolve_or_fail_in_one_line(monkeypatch):
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "gpu0", "mps"):
        with pytest.raises(UserError, match="device"):
            dev.resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="sees no CUDA GPU"):
        dev.resolve_device("cuda:0")


def test_load_model_follows_the_default_device():
    tok = build_tokenizer(toy_texts(ROWS))
    dev.set_default_device("cpu")
    model, _ = load_model("nano", tok, seed=0)
    assert dev.model_device(model) == torch.device("cpu")
    with pytest.raises(UserError):
        dev.set_default_device("tpu")
    assert dev.default_device() == torch.device("cpu")  # a bad name changes nothing


def test_cli_rejects_a_bad_device_before_any_work(tmp_path):
    out = tmp_path / "data"
    r = cli("--device", "tpu", "data", "--out", str(out), "--sft-size", "4", "--rl-size", "4", "--eval-size", "2")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "device" in r.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- CPU == GPU


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(toy_texts(ROWS))


@pytest.fixture(scope="module")
def warm(tok, tmp_path_factory):
    """A nano model SFT'd on the CPU until its samples mix right and wrong answers."""
    model, _ = load_model("nano", tok, seed=0, device="cpu")
    cfg = SFTConfig(max_steps=60, learning_rate=1e-2, logging_steps=10, eval_steps=0, eval_size=0, save_steps=0)
    train_sft(cfg, model, tok, ROWS, [], tmp_path_factory.mktemp("sft"), progress=False)
    return model.eval()


def on(model, where, dtype=None):
    moved = copy.deepcopy(model).to(where)
    return moved.to(dtype) if dtype is not None else moved


def metric_rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@needs_cuda
def test_sampler_draws_the_same_tokens_on_both_devices(warm, tok):
    prompts = [encode_prompt(tok, r["prompt"]) for r in ROWS[:6] for _ in range(4)]
    results = []
    for where in ("cpu", "cuda"):
        model = on(warm, where, torch.float64)  # float64: no near-ties that rounding could flip
        ro = sample(model, prompts, max_new_tokens=24, temperature=1.0, eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id, generator=torch.Generator().manual_seed(5))
        results.append(ro)
    cpu, gpu = results
    assert gpu.completion_ids.device.type == "cuda"
    assert cpu.completions() == gpu.completions()
    # HF-style RMSNorm computes in float32 even in a float64 model, and float32 reductions
    # round differently on the two devices.
    torch.testing.assert_close(cpu.logprobs, gpu.logprobs.cpu(), rtol=0, atol=1e-5)


@needs_cuda
def test_sft_steps_match_on_both_devices(tok, tmp_path):
    finals, losses = [], []
    for where in ("cpu", "cuda"):
        model, _ = load_model("nano", tok, seed=1, device=where)
        cfg = SFTConfig(max_steps=4, learning_rate=1e-3, logging_steps=1, eval_steps=0, eval_size=0, save_steps=0, seed=1)
        train_sft(cfg, model, tok, ROWS, [], tmp_path / where, progress=False)
        finals.append(torch.cat([p.detach().cpu().flatten() for p in model.parameters()]))
        losses.append([r["loss"] for r in metric_rows(tmp_path / where)])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    torch.testing.assert_close(finals[0], finals[1], rtol=0, atol=1e-4)


@needs_cuda
def test_grpo_steps_match_on_both_devices(warm, tok, tmp_path):
    finals, rewards = [], []
    for where in ("cpu", "cuda"):
        model = on(warm, where)
        cfg = GRPOConfig(max_steps=2, prompts_per_step=3, num_generations=4, max_completion_length=32, learning_rate=1e-3,
                         warmup_steps=0, eval_steps=0, eval_size=0, save_steps=0, seed=0)
        train_grpo(cfg, model, tok, ROWS, None, tmp_path / where, progress=False)
        finals.append(torch.cat([p.detach().cpu().flatten() for p in model.parameters()]))
        rewards.append([r["reward"] for r in metric_rows(tmp_path / where)])
    assert rewards[0] == rewards[1]  # the same rollouts were drawn and scored
    torch.testing.assert_close(finals[0], finals[1], rtol=0, atol=1e-4)


@needs_cuda
def test_analysis_matches_on_both_devices(warm, tok):
    knobs = {"max_completion_length": 24, "temperature": 1.0}
    tr = sample_groups(warm, tok, ROWS[:4], 4, knobs, 0, "train", False)
    tg = sample_groups(warm, tok, ROWS[4:8], 4, knobs, 0, "targets", False)
    kw = dict(normalization="seq-mean", max_length=24, temperature=1.0)
    out = {}
    for where in ("cpu", "cuda"):
        model = on(warm, where, torch.float64)
        params = feat.select_params(model)
        out[where] = {
            "vmap": feat.features_vmap(model, tr["prompts"], tr["completions"], tok.pad_token_id, chunk_size=8, **kw),
            "kron": features_layerwise(model, tr["prompts"], tr["completions"], tok.pad_token_id, kron_rank=4, seed=3, **kw),
            "dJ": delta_J_aggregated(model, params, tr["prompts"], tr["completions"], tr["rewards"], tg["prompts"],
                                     tg["completions"], tg["rewards"], tok.pad_token_id, num_generations=4, **kw)["delta_J"],
        }
    for key, cpu in out["cpu"].items():
        gpu = out["cuda"][key]
        assert gpu.device.type == "cpu", key  # results come back to the CPU
        # Llama upcasts RMSNorm and softmax to float32 even in a float64 model.
        assert (cpu - gpu).abs().max() <= 1e-5 * cpu.abs().max(), key
    # Dense sketch blocks are drawn on the GPU: the streamed sketch must equal the sketch of the
    # exact features, with the same draws.
    sketch = feat.features_vmap(model, tr["prompts"], tr["completions"], tok.pad_token_id, chunk_size=8, project_dim=64,
                                seed=3, **kw)
    sizes = [p.numel() for p in params.values()]
    exact = dict(zip(params, out["cuda"]["vmap"].to("cuda").split(sizes, dim=1)))
    expected = feat.project(exact, 64, 3).cpu()
    assert (sketch - expected).abs().max() <= 1e-5 * expected.abs().max()


@needs_cuda
def test_cli_trains_and_analyses_on_the_gpu(tmp_path):
    data = tmp_path / "data"
    assert cli("data", "--out", str(data), "--sft-size", "40", "--rl-size", "20", "--eval-size", "4").returncode == 0
    run = tmp_path / "run"
    r = cli("--device", "cuda", "train", "--data", str(data), "--out", str(run), "--preset", "nano", "--sft-steps", "6",
            "--grpo-steps", "2", "--prompts-per-step", "2", "--num-generations", "2", "--max-completion-length", "8",
            "--eval-size", "2", "--eval-steps", "0", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "config.json").read_text())["train"]["device"] == "cuda"
    r = cli("--device", "cuda", "analyze", "--ckpt", str(run / "sft"), "--run", str(run), "--queries", "2", "--targets-n", "2",
            "--quiet")
    assert r.returncode == 0, r.stderr
    summaries = list((run / "analysis").glob("*/summary.json"))
    assert summaries and json.loads(summaries[0].read_text())["device"] == "cuda:0"
