"""The GRPO trainer: outputs, exact micro-batching, and exact resume."""

import json

import pytest
import torch
from toy_data import toy_rows, toy_texts

from coinfluence.errors import UserError
from coinfluence.models.loading import load_model
from coinfluence.models.tokenizer import build_tokenizer
from coinfluence.training.grpo import GRPOConfig, train_grpo
from coinfluence.training.sft import SFTConfig, train_sft

ROWS = toy_rows(12, seed=3)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(toy_texts(ROWS))


@pytest.fixture(scope="module")
def warm(tok, tmp_path_factory):
    """State of a nano model SFT'd briefly, so that sampled groups mix right and wrong answers."""
    model, _ = load_model("nano", tok, seed=0)
    cfg_sft = SFTConfig(max_steps=60, learning_rate=1e-2, logging_steps=10, eval_steps=0, eval_size=0, save_steps=0)
    train_sft(cfg_sft, model, tok, ROWS, [], tmp_path_factory.mktemp("sft"), progress=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def warm_model(tok, warm):
    model, _ = load_model("nano", tok, seed=0)
    model.load_state_dict(warm)
    return model


def cfg(**kw):
    base = dict(max_steps=3, prompts_per_step=3, num_generations=4, max_completion_length=64, learning_rate=1e-3,
                warmup_steps=0, eval_steps=0, eval_size=4, save_steps=1, seed=0)
    return GRPOConfig(**{**base, **kw})


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_grpo_eval_size_zero_skips_validation(tok, warm, tmp_path):
    """``--eval-size 0`` with validation splits given: no validation, no crash at the last step."""
    model = warm_model(tok, warm)
    train_grpo(cfg(max_steps=2, eval_steps=1, eval_size=0, save_steps=0), model, tok, ROWS, {"val_id": ROWS[:4]}, tmp_path,
               progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("stage") == "grpo"] == [1, 2]
    assert not any(key.startswith("val_id") for r in rows for key in r)


def test_grpo_writes_metrics_and_checkpoints(tok, warm, tmp_path):
    model = warm_model(tok, warm)
    before = weights(model).clone()
    summary = train_grpo(cfg(beta=0.1, eval_steps=2), model, tok, ROWS, {"val_id": ROWS[:4]}, tmp_path, progress=False)
    assert not summary["stopped"] and (tmp_path / "grpo" / "final" / "model.safetensors").exists()
    for step in (1, 2, 3):
        assert (tmp_path / "grpo" / f"step-{step:06d}" / "trainer_state.pt").exists()
    # The final model keeps the optimizer state (the Adam-aware analysis of it needs the next step), named.
    from coinfluence.training.checkpoint import load_trainer_state

    final = load_trainer_state(tmp_path / "grpo" / "final")
    assert final["step"] == 3 and final["param_names"] == [[n for n, _ in model.named_parameters()]]
    assert len(final["optimizer"]["state"]) == len(final["param_names"][0])
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and all(r["stage"] == "grpo" for r in rows)
    assert set(rows[0]) == {"stage", "step", "val_id_accuracy", "val_id_step_accuracy", "time"}  # where RL starts from
    rows = rows[1:]
    for key in ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio",
                "kl", "clip_ratio", "entropy", "loss", "grad_norm", "learning_rate", "step_time", "time/generate", "time/update", "alpha_hist", "step_accuracy"):
        assert key in rows[-1], key
    assert sum(rows[0]["alpha_hist"]) == 3 and len(rows[0]["alpha_hist"]) == 5
    assert all(0 < r["time/generate"] and 0 < r["time/update"] and r["time/generate"] + r["time/update"] < r["step_time"] for r in rows)
    assert "val_id_accuracy" in rows[-1] and "val_id_accuracy" in rows[1] and "val_id_accuracy" not in rows[0]
    assert 0 < rows[-1]["completions/mean_length"] <= 64
    assert all(r["completions/min_length"] <= r["completions/mean_length"] <= r["completions/max_length"] <= 64 for r in rows)
    assert any(r["frac_reward_zero_std"] < 1 for r in rows), "no group had a reward spread: the test would be vacuous"
    assert not torch.equal(before, weights(model))
    assert json.loads((tmp_path / "config.json").read_text())["grpo"]["reward"] == "answer"  # the run records its reward


def test_grpo_logs_the_share_of_rollouts_with_injected_behaviours(tok, warm, tmp_path):
    import dataclasses

    from coinfluence.tasks.registry import get_task

    seen = []

    def count_behaviours(completion):  # a stand-in reader: a behaviour wherever the rollout has an odd length
        seen.append(completion)
        return {"attempts": len(completion) % 2, "restates": 0}

    task = dataclasses.replace(get_task(), count_behaviours=count_behaviours)
    train_grpo(cfg(max_steps=2, save_steps=0), warm_model(tok, warm), tok, ROWS, None, tmp_path, progress=False, task=task)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_step = 3 * 4  # prompts_per_step x num_generations
    assert len(seen) == 2 * per_step
    for r in rows:
        batch = seen[(r["step"] - 1) * per_step : r["step"] * per_step]
        assert r["behaviours/frac"] == pytest.approx(sum(len(c) % 2 for c in batch) / per_step)
        assert r["behaviours/attempts"] == pytest.approx(r["behaviours/frac"]) and r["behaviours/restates"] == 0
    assert 0 < sum(len(c) % 2 for c in seen) < len(seen), "every rollout alike: the test would be vacuous"


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_micro_batching_does_not_change_the_step(tok, warm, tmp_path, loss_type):
    start = weights(warm_model(tok, warm))
    results = []
    for micro in (36, 7):
        model = warm_model(tok, warm)
        train_grpo(cfg(max_steps=2, prompts_per_step=6, num_generations=6, micro_batch_size=micro, loss_type=loss_type, save_steps=0),
                   model, tok, ROWS, None, tmp_path / f"m{micro}", progress=False)
        results.append(weights(model))
    # Updates are ~lr = 1e-3; summation order in float32, amplified by Adam, moves a few
    # weights by ~1e-6.
    assert (results[0] - start).abs().max() > 1e-4
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-5)


def test_resume_equals_an_uninterrupted_run(tok, warm, tmp_path):
    straight = warm_model(tok, warm)
    train_grpo(cfg(max_steps=4, save_steps=2), straight, tok, ROWS, None, tmp_path / "a", progress=False)
    killed = warm_model(tok, warm)
    assert train_grpo(cfg(max_steps=4, save_steps=2), killed, tok, ROWS, None, tmp_path / "b", stop_after=3, progress=False)["stopped"]
    resumed = warm_model(tok, warm)
    train_grpo(cfg(max_steps=4, save_steps=2), resumed, tok, ROWS, None, tmp_path / "b", resume=True, progress=False)
    torch.testing.assert_close(weights(straight), weights(resumed), rtol=0, atol=1e-6)
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("field, value", [("num_generations", 1), ("loss_type", "ppo"), ("scale_rewards", "max"), ("temperature", 0.0), ("std", "mad")])
def test_bad_options_are_user_errors(tok, tmp_path, field, value):
    model, _ = load_model("nano", tok, seed=0)
    with pytest.raises(UserError):
        train_grpo(cfg(**{field: value}), model, tok, ROWS, None, tmp_path, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_step_reward_pays_only_for_right_steps():
    from coinfluence.tasks.data import DataConfig, make_dataset
    from coinfluence.training.grpo import reward_completions

    row = make_dataset(DataConfig(preset="mini2", behaviours="none", seed=2, sft_size=5, rl_size=5, eval_size=5))["sft"][0]
    lines = row["completion"].splitlines()
    first = lines[0]
    lines[0] = first.replace(" = ", " = 0 + ", 1) if first.count(" = ") == 1 else first  # a wrong first step
    wrong_step = "\n".join(lines)
    assert wrong_step != row["completion"]
    texts, answers, prompts = [row["completion"], wrong_step], [row["answer"]] * 2, [row["prompt"]] * 2
    answer_correct, _ = reward_completions(texts, answers, 0.0, prompts, "answer")
    step_correct, rewards = reward_completions(texts, answers, 0.0, prompts, "steps")
    assert answer_correct.tolist() == [1.0, 1.0] and step_correct.tolist() == rewards.tolist() == [1.0, 0.0]


def test_zero_advantage_rollouts_are_skipped_without_changing_the_step(tok, warm):
    """Skipping rollouts whose advantage is 0 gives the update of the whole batch, also when no
    rollout is left (AdamW then still moves on its moments)."""
    import copy

    from coinfluence.models.format import encode_completion, encode_prompt
    from coinfluence.training.grpo import _optimise

    rows = [r for r in ROWS[:4] for _ in range(2)]
    prompts = [encode_prompt(tok, r["prompt"]) for r in rows]
    completions = [encode_completion(tok, r["completion"])[: 5 + k] for k, r in enumerate(rows)]
    mixed = torch.tensor([1.0, -1.0, 0.0, 0.0, 0.5, -0.5, 0.0, 0.0], dtype=torch.float64)
    cfg_ = cfg(micro_batch_size=3)
    results = {}
    for skip in (True, False):
        model = warm_model(tok, warm)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        seen = []
        hook = model.model.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
        reference = None if skip else copy.deepcopy(model)  # a reference model makes every rollout run
        for adv in (mixed, torch.zeros(8, dtype=torch.float64)):
            stats = _optimise(cfg_, model, opt, prompts, completions, adv, tok.pad_token_id, reference)
        hook.remove()
        results[skip] = (weights(model), stats, sum(seen))
    # Skipping regroups the micro-batches, so sums run in another order; Adam divides by sqrt(v),
    # which lifts that float noise in near-zero gradients to ~1e-6 on AVX-512 kernels. Dropping a
    # rollout that counts would move weights by ~lr = 1e-3.
    torch.testing.assert_close(results[True][0], results[False][0], rtol=0, atol=1e-5)
    assert results[True][1]["loss"] == pytest.approx(results[False][1]["loss"], abs=1e-9)
    assert results[True][2] == 4 and results[False][2] >= 16  # rows through the model: 4 vs all 8, twice


def test_sampler_entropy_equals_the_policy_entropy_at_each_token(tok, warm):
    from coinfluence.models.format import encode_prompt
    from coinfluence.training.objectives import rollout_batch, sequence_logprobs
    from coinfluence.training.rollout import sample

    model = warm_model(tok, warm)
    prompts = [encode_prompt(tok, r["prompt"]) for r in ROWS[:3]]
    ro = sample(model, prompts, max_new_tokens=12, temperature=1.3, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    batch = rollout_batch(prompts, ro.completions(), tok.pad_token_id)
    with torch.no_grad():
        _, entropy = sequence_logprobs(model, batch, 1.3, with_entropy=True)
    for b, completion in enumerate(ro.completions()):
        start = len(prompts[b]) - 1
        torch.testing.assert_close(ro.entropies[b, : len(completion)], entropy[b, start : start + len(completion)].float(),
                                   rtol=1e-4, atol=1e-5)
        assert ro.entropies[b, len(completion):].eq(0).all()
