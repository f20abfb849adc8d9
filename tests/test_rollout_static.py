"""The fixed-shape decode step (backend="static"): the lean engine's tokens and log-probs,
padding rows that never leak, buffers reset between chunks, and the CUDA-graph bookkeeping
exercised on the CPU with a stand-in for the graph."""

from __future__ import annotations

import warnings

import pytest
import torch

from coinfluence.training.rollout import TokenChooser, sample
from coinfluence.training.rollout_static import StaticDecoder, StepGraphs, batch_bucket
from tests.test_rollout import EOS, PAD, random_prompts, tiny_llama

RAGGED = (4, 6, 8, 5, 3, 9, 7, 2, 11, 1)


def draw(model, prompts, backend, seed=0, **kw):
    options = dict(max_new_tokens=14, temperature=1.0, eos_token_id=EOS, pad_token_id=PAD,
                   generator=torch.Generator().manual_seed(seed), backend=backend)
    return sample(model, prompts, **{**options, **kw})


def assert_same_rollouts(a, b):
    assert a.completions() == b.completions()
    assert torch.equal(a.lengths, b.lengths) and torch.equal(a.finished, b.finished)
    torch.testing.assert_close(a.logprobs, b.logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.entropies, b.entropies, rtol=0, atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_static_step_gives_the_lean_tokens_with_early_stops_and_ragged_prompts(temperature):
    model = tiny_llama(21, kv_heads=2)
    prompts = random_prompts(21, lengths=RAGGED)
    free = draw(model, prompts, "lean", temperature=temperature, eos_token_id=None).completions()
    # Stop tokens that end some rows early, at different steps.
    stops = sorted({free[0][1], free[3][4], free[6][2]})
    lean = draw(model, prompts, "lean", temperature=temperature, stop_token_ids=stops)
    static = draw(model, prompts, "static", temperature=temperature, stop_token_ids=stops)
    assert lean.finished.any() and not lean.finished.all()
    assert_same_rollouts(static, lean)


def test_all_rows_stopping_ends_the_static_loop_like_the_lean_one():
    model = tiny_llama(22)
    prompts = random_prompts(22, lengths=(3, 5))
    free = draw(model, prompts, "lean", eos_token_id=None).completions()
    stops = [free[0][0], free[1][1]]
    lean = draw(model, prompts, "lean", stop_token_ids=stops)
    static = draw(model, prompts, "static", stop_token_ids=stops)
    assert lean.finished.all() and lean.completion_ids.shape[1] < 14
    assert_same_rollouts(static, lean)


def run_decoder(decoder, model, prompts, seed=3, max_new=10, stops=(EOS,)):
    chooser = TokenChooser(1.0, 1.0, torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return decoder(model, prompts, max_new, chooser, list(stops), PAD)


def test_padding_rows_of_a_bucket_do_not_change_the_real_rows():
    model = tiny_llama(23)
    prompts = random_prompts(23, lengths=(4, 7, 2, 9, 5))
    padded = StaticDecoder(model, buckets=(8,))
    exact = StaticDecoder(model, buckets=(5,))
    a, b = run_decoder(padded, model, prompts), run_decoder(exact, model, prompts)
    assert [key[0] for key in padded.buffers] == [8] and [key[0] for key in exact.buffers] == [5]
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    assert torch.equal(a[0], b[0])  # the same token ids


def test_buffers_are_reset_between_chunks_of_the_same_shape():
    model = tiny_llama(24)
    first, second = random_prompts(24, lengths=(6, 3, 9)), random_prompts(25, lengths=(9, 2, 4))
    reused = StaticDecoder(model)
    run_decoder(reused, model, first)
    (buf,) = reused.buffers.values()
    # Stale state a missing reset would leave behind: garbage K/V and unmasked slots.
    with torch.inference_mode():
        buf.cache.fill_(float("nan"))
        buf.bias.zero_()
    again = run_decoder(reused, model, second)
    fresh = run_decoder(StaticDecoder(model), model, second)
    assert len(reused.buffers) == 1
    for x, y in zip(again, fresh):
        assert torch.equal(x, y)


def test_batch_bucket_is_the_smallest_that_fits():
    assert [batch_bucket(n) for n in (1, 2, 8, 9, 64, 65)] == [1, 8, 8, 16, 64, 128]
    assert batch_bucket(5, (4,)) == 8 and batch_bucket(1000) == 1024


class FakeGraphs:
    """Stands in for CUDA graph capture: ``replay`` recomputes the captured output in place."""

    def __init__(self, fail: bool = False):
        self.fail, self.captures, self.replays = fail, 0, 0

    def __call__(self, step):
        if self.fail:
            raise RuntimeError("capture not supported here")
        self.captures += 1
        output = step()

        def replay():
            self.replays += 1
            output.copy_(step())

        return replay, output


def test_graph_bookkeeping_captures_once_per_key_and_replays_each_step():
    model = tiny_llama(26)
    prompts = random_prompts(26, lengths=(4, 7, 2))
    fake = FakeGraphs()
    graphed = StaticDecoder(model, capture=fake)
    out = run_decoder(graphed, model, prompts, stops=())
    ref = run_decoder(StaticDecoder(model), model, prompts, stops=())
    assert fake.captures == 1 and fake.replays == 9  # one per decode step after the prefill
    for x, y in zip(out, ref):
        assert torch.equal(x, y)
    run_decoder(graphed, model, prompts, stops=())
    assert fake.captures == 1 and fake.replays == 18  # same (bucket, length): the graph is reused
    run_decoder(graphed, model, prompts[:1], stops=())
    assert fake.captures == 2  # bucket 1 is a new graph


def test_step_graphs_replay_until_a_capture_fails_then_warn_once_and_run_eagerly():
    calls = []

    def step():
        calls.append(1)
        return torch.tensor([float(len(calls))])

    fake = FakeGraphs()
    graphs = StepGraphs(fake)
    assert graphs.run("a", step).item() == 2  # the capture ran the step once, the replay again
    assert graphs.run("a", step).item() == 3 and fake.captures == 1 and fake.replays == 2
    failing = StepGraphs(FakeGraphs(fail=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = [failing.run(key, step).item() for key in ("a", "b", "a")]
    assert values == [4, 5, 6]
    assert len([w for w in caught if "CUDA graph capture" in str(w.message)]) == 1


def test_bad_static_choices_are_refused():
    model = tiny_llama(27)
    with pytest.raises(ValueError, match="compile"):
        draw(model, [[5, 6]], "static", compile=True)
    with pytest.raises(ValueError, match="backend"):
        draw(model, [[5, 6]], "graphs")
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=16, n_layer=1, n_head=2, n_positions=64)).eval()
    with pytest.raises(ValueError, match="does not support"):
        draw(gpt2, [[5, 6]], "static")
