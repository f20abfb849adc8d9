"""The shared rollout sampler: exactness against HF, log-probs, stopping, seeding, both engines."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from coinfluence.errors import UserError
from coinfluence.training.rollout import LeanLlama, Rollouts, lean_unsupported_reason, sample

PAD, EOS, VOCAB = 0, 1, 97


def tiny_llama(seed: int, *, kv_heads: int = 4, dtype=torch.float32, **extra) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
        rope_theta=500.0, attn_implementation="eager", pad_token_id=PAD, eos_token_id=EOS, bos_token_id=2,
        **extra,
    )
    # Wider-than-default init so tokens vary and eos shows up in short runs.
    config.initializer_range = 0.2
    return LlamaForCausalLM(config).to(dtype).eval()


def random_prompts(seed: int, lengths=(5, 9, 3, 12, 1, 7)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


def hf_greedy(model, prompts, max_new_tokens: int, eos=EOS) -> list[list[int]]:
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=PAD, eos_token_id=eos)
    rows = out[:, width:].tolist()
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def teacher_forced_logprobs(model, prompt: list[int], completion: list[int], temperature: float = 1.0) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double()
    logp = torch.log_softmax(logits / temperature, -1)
    return logp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def run(model, prompts, **kw) -> Rollouts:
    options = dict(max_new_tokens=16, temperature=0.0, eos_token_id=EOS, pad_token_id=PAD)
    return sample(model, prompts, **{**options, **kw})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lean_rms_norm_rounds_exactly_like_hf(dtype):
    # The lean engine uses one fused op for float32; it must round exactly like HF's module,
    # or greedy tokens could drift from generate's.
    model = tiny_llama(0, dtype=dtype)
    norm = model.model.layers[0].input_layernorm
    torch.nn.init.normal_(norm.weight)
    net = LeanLlama(model)
    for shape in [(6, 1, 32), (6, 12, 32), (1, 3, 32)]:
        x = 3 * torch.randn(shape, dtype=dtype)
        assert torch.equal(net.rms_norm(x, norm.weight), norm(x))


@pytest.mark.parametrize("seed", [0, 1])
def test_lean_greedy_equals_hf_generate_with_left_padding(seed):
    # float32: HF's eager attention in float64 turns fully masked pad rows into NaN, which
    # reaches real rows (see test_float64_model_with_left_padding_stays_finite).
    model = tiny_llama(seed)
    prompts = random_prompts(seed)
    assert lean_unsupported_reason(model) is None
    ours = run(model, prompts, max_new_tokens=20, backend="lean")
    assert torch.isfinite(ours.logprobs).all()
    assert ours.completions() == hf_greedy(model, prompts, 20)


def test_mixed_lengths_batch_equals_each_prompt_alone():
    model = tiny_llama(3)
    prompts = random_prompts(3)
    batched = run(model, prompts, backend="lean").completions()
    alone = [run(model, [p], backend="lean").completions()[0] for p in prompts]
    assert batched == alone


def test_gqa_lean_greedy_equals_hf_generate():
    model = tiny_llama(4, kv_heads=2)
    prompts = random_prompts(4)
    ours = run(model, prompts, max_new_tokens=20, backend="lean")
    assert torch.isfinite(ours.logprobs).all() and ours.completions() == hf_greedy(model, prompts, 20)


def test_qwen2_with_qkv_bias_runs_lean_and_matches_generate():
    torch.manual_seed(5)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         attn_implementation="eager", pad_token_id=PAD, eos_token_id=EOS)
    config.initializer_range = 0.2
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # HF initialises biases to zero; make them matter
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_(0, 0.5)
            layer.self_attn.k_proj.bias.normal_(0, 0.5)
    assert lean_unsupported_reason(model) is None
    prompts = random_prompts(5)
    ours = run(model, prompts, max_new_tokens=12, backend="lean")
    assert torch.isfinite(ours.logprobs).all() and ours.completions() == hf_greedy(model, prompts, 12)


def test_float64_model_with_left_padding_stays_finite():
    """A float64 model's own min as the mask becomes -inf in the float32 softmax; a pad row
    then turns NaN and spreads to real rows (0 * NaN). The lean engine must stay finite and
    draw what the float32 model draws."""
    model = tiny_llama(7)
    prompts = random_prompts(7)
    kw = dict(max_new_tokens=12, temperature=1.0, backend="lean")
    r32 = run(model, prompts, generator=torch.Generator().manual_seed(0), **kw)
    r64 = run(model.double(), prompts, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.isfinite(r64.logprobs).all()
    assert r64.completions() == r32.completions()
    torch.testing.assert_close(r64.logprobs, r32.logprobs, rtol=0, atol=1e-4)


def test_fallback_engine_gives_the_same_greedy_tokens_as_lean():
    model = tiny_llama(6, kv_heads=2)
    prompts = random_prompts(6)
    lean = run(model, prompts, max_new_tokens=20, backend="lean")
    hf = run(model, prompts, max_new_tokens=20, backend="hf")
    assert lean.completions() == hf.completions()
    torch.testing.assert_close(lean.logprobs, hf.logprobs, rtol=0, atol=1e-5)
    assert torch.equal(lean.finished, hf.finished)


class OldCacheName(torch.nn.Module):
    """A causal LM with transformers 4's cache argument: ``past_key_values`` in and out."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=past_key_values, use_cache=use_cache)
        return SimpleNamespace(logits=out.logits, past_key_values=out.cache)


def test_hf_engine_passes_the_cache_under_the_name_the_model_takes():
    import warnings

    model = tiny_llama(6, kv_heads=2)
    prompts = random_prompts(6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = run(model, prompts, max_new_tokens=12, backend="hf")
    assert not [w for w in caught if "past_key_values" in str(w.message)]  # transformers 5 deprecates that name
    old = run(OldCacheName(model), prompts, max_new_tokens=12, backend="hf")
    assert old.completions() == new.completions() == hf_greedy(model, prompts, 12)


def test_unsupported_model_falls_back_and_lean_refuses_it():
    model = tiny_llama(7, hidden_act="gelu")
    assert "silu" in lean_unsupported_reason(model)
    with pytest.raises(ValueError, match="lean"):
        run(model, random_prompts(7), backend="lean")
    assert len(run(model, random_prompts(7)).completions()) == 6  # auto -> hf engine


@pytest.mark.parametrize("backend", ["lean", "hf"])
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_logprobs_match_a_teacher_forced_forward(backend, temperature):
    model = tiny_llama(8, kv_heads=2)
    prompts = random_prompts(8)
    g = torch.Generator().manual_seed(0)
    r = run(model, prompts, temperature=temperature, top_p=0.9, generator=g, backend=backend)
    policy_temperature = temperature or 1.0  # greedy reports log-probs at temperature 1
    for row, (prompt, completion) in enumerate(zip(prompts, r.completions())):
        expected = teacher_forced_logprobs(model, prompt, completion, policy_temperature)
        n = len(completion)
        torch.testing.assert_close(r.logprobs[row, :n].double(), expected, rtol=0, atol=1e-5)
        assert torch.all(r.logprobs[row, n:] == 0)


def test_stop_tokens_and_eos_end_rows_and_pad_after():
    model = tiny_llama(9)
    prompts = random_prompts(9)
    free = run(model, prompts, max_new_tokens=12, eos_token_id=None)
    assert not free.finished.any() and free.lengths.tolist() == [12] * 6
    # Stop at the third token each row would produce anyway; the stop token is kept.
    stops = sorted({c[2] for c in free.completions()})
    stopped = run(model, prompts, max_new_tokens=12, eos_token_id=None, stop_token_ids=stops)
    for full, cut, n, done in zip(free.completions(), stopped.completions(), stopped.lengths.tolist(), stopped.finished):
        first = next(k for k, t in enumerate(full) if t in stops)
        assert cut == full[: first + 1] and n == first + 1 and done
    assert torch.all(stopped.completion_ids[~stopped.mask] == PAD)
    assert torch.all(stopped.logprobs[~stopped.mask] == 0)
    assert stopped.completion_ids.shape[1] == int(stopped.lengths.max())
    # The same token passed as eos behaves the same way.
    as_eos = run(model, prompts, max_new_tokens=12, eos_token_id=stops)
    assert as_eos.completions() == stopped.completions()


def test_rows_that_stop_early_do_not_change_the_others():
    """Finished rows are dropped from the batch mid-run; the rest must not notice."""
    model = tiny_llama(10)
    prompts = random_prompts(10, lengths=(4, 6, 8, 5, 3, 9, 7, 2))
    free = run(model, prompts, max_new_tokens=14, eos_token_id=None).completions()
    stops = [free[0][1], free[1][2], free[2][3]]  # make some rows end at different steps
    stopped = run(model, prompts, max_new_tokens=14, eos_token_id=None, stop_token_ids=stops)
    for full, cut in zip(free, stopped.completions()):
        first = next((k for k, t in enumerate(full) if t in stops), len(full) - 1)
        assert cut == full[: first + 1]
    assert stopped.finished.sum() >= 3


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    model = tiny_llama(11)
    prompts = random_prompts(11) * 2

    def draw(seed, backend="lean"):
        return run(model, prompts, temperature=1.0, generator=torch.Generator().manual_seed(seed), backend=backend)

    a, b, c = draw(1), draw(1), draw(2)
    assert a.completions() == b.completions() and torch.equal(a.logprobs, b.logprobs)
    assert a.completions() != c.completions()
    assert draw(1, "hf").completions() == a.completions()  # both engines draw the same way


def test_tiny_top_p_is_greedy_and_batch_size_chunks_agree():
    model = tiny_llama(12)
    prompts = random_prompts(12)
    greedy = run(model, prompts)
    nucleus = run(model, prompts, temperature=1.0, top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert nucleus.completions() == greedy.completions()
    chunked = run(model, prompts, batch_size=4)
    assert chunked.completions() == greedy.completions()
    assert chunked.prompt_ids == prompts


def test_results_can_enter_autograd_and_bad_options_are_refused():
    model = tiny_llama(13)
    r = run(model, random_prompts(13), temperature=1.0, generator=torch.Generator().manual_seed(0))
    w = torch.ones((), requires_grad=True)
    (r.logprobs * w).sum().backward()  # inference-mode tensors would refuse this
    assert model.training is False
    for bad in (dict(temperature=-1.0), dict(top_p=0.0), dict(max_new_tokens=0)):
        with pytest.raises(ValueError):
            run(model, random_prompts(13), **bad)
    with pytest.raises(ValueError):
        run(model, [[5], []])


def test_sampling_leaves_train_mode_as_it_was():
    model = tiny_llama(14).train()
    run(model, random_prompts(14))
    assert model.training


def test_chunks_by_length_cover_every_row_once_shortest_first():
    from coinfluence.training.rollout import chunks_by_length, length_order

    lengths = [5, 2, 9, 2, 1, 7, 3]
    assert length_order(lengths) == [4, 1, 3, 6, 0, 5, 2]  # ties keep input order
    chunks = chunks_by_length(lengths, 3)
    assert chunks == [[4, 1, 3], [6, 0, 5], [2]]
    assert chunks_by_length([], 3) == []


def test_the_default_engine_is_what_sampler_chose(monkeypatch):
    """``--sampler`` (set_default_backend) picks the engine of every sample() call that names none."""
    import coinfluence.training.rollout as rollout

    used = []
    real_hf = rollout.sample_hf
    monkeypatch.setattr(rollout, "sample_hf", lambda *a, **k: used.append("hf") or real_hf(*a, **k))
    monkeypatch.setattr(rollout, "_default_backend", ["auto"])
    model, prompts = tiny_llama(7), random_prompts(7)
    auto = run(model, prompts)
    rollout.set_default_backend("hf")
    hf = run(model, prompts)
    assert used == ["hf"] and auto.completions() == hf.completions()
    with pytest.raises(UserError, match="--sampler must be one of"):
        rollout.set_default_backend("fast")


def test_a_bad_sampler_is_one_line_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from coinfluence_cli.main import app

    r = CliRunner().invoke(app, ["--sampler", "fast", "data", "--out", str(tmp_path / "d")])
    assert isinstance(r.exception, UserError) and "--sampler" in str(r.exception)
    assert not (tmp_path / "d").exists()
