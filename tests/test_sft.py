"""SFT: overfitting, the completion-only mask, batching, exact resume, checkpoints, load errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from coinfluence.errors import UserError
from coinfluence.io import read_jsonl
from coinfluence.models import build_tokenizer, load_model
from coinfluence.models.format import encode_example, encode_prompt
from coinfluence.training.evaluate import generate_completions
from coinfluence.training.sft import (
    IGNORE_INDEX,
    SFTConfig,
    collate,
    encode_rows,
    epoch_batches,
    lr_factor,
    micro_batches_from,
    summed_token_loss,
    train_sft,
)
from toy_data import toy_rows, toy_texts


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(toy_texts(toy_rows(300, seed=99)))


@pytest.fixture(scope="module")
def overfit(tok, tmp_path_factory):
    """A nano model trained on 8 rows until it memorises them."""
    rows = toy_rows(8, seed=1)
    model, _ = load_model("nano", tok, seed=0)
    out = tmp_path_factory.mktemp("overfit")
    cfg = SFTConfig(max_steps=150, learning_rate=1e-2, logging_steps=10, eval_steps=0, eval_size=8, save_steps=0)
    summary = train_sft(cfg, model, tok, rows, rows, out, progress=False)
    return model, rows, out, summary


def test_overfits_a_handful_of_examples(overfit, tok):
    model, rows, out, summary = overfit
    logged = [r for r in read_jsonl(out / "metrics.jsonl") if r["stage"] == "sft"]
    assert [r["step"] for r in logged] == list(range(10, 151, 10))
    assert logged[-1]["loss"] < 0.05 < 1.0 < logged[0]["loss"]
    for r in logged:
        assert r["tokens_per_second"] > 0 and r["grad_norm"] >= 0 and r["lr"] >= 0 and math.isfinite(r["loss"])
    assert logged[-1]["val_accuracy"] == summary["val_accuracy"] == 1.0
    completions = generate_completions(model, tok, [r["prompt"] for r in rows], max_new_tokens=100)
    assert [c[0] for c in completions] == [r["completion"] for r in rows]


def test_final_checkpoint_reloads_with_identical_logits(overfit):
    model, rows, out, _ = overfit
    loaded = AutoModelForCausalLM.from_pretrained(out / "sft", attn_implementation="eager")
    loaded_tok = AutoTokenizer.from_pretrained(out / "sft")
    ids, _ = encode_example(loaded_tok, rows[0]["prompt"], rows[0]["completion"])
    x = torch.tensor([ids])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    assert json.loads((out / "sft" / "sft_config.json").read_text())["max_steps"] == 150
    assert json.loads((out / "config.json").read_text())["sft"]["learning_rate"] == 1e-2
    reloaded, reloaded_tok = load_model(out / "sft")
    assert reloaded.config._attn_implementation == "eager"
    with torch.no_grad():
        assert torch.equal(model(x).logits, reloaded(x).logits)


def test_completion_only_labels_mask_exactly_the_prompt(tok):
    rows = toy_rows(3, seed=5)
    examples = encode_rows(tok, rows, 1024)
    batch = collate(examples, tok.pad_token_id, completion_only_loss=True)
    full = collate(examples, tok.pad_token_id, completion_only_loss=False)
    for row, (r, (ids, mask)) in enumerate(zip(rows, examples)):
        n_prompt = len(encode_prompt(tok, r["prompt"]))
        labels = batch["labels"][row].tolist()
        assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert labels[n_prompt : len(ids)] == ids[n_prompt:]
        assert labels[len(ids):] == [IGNORE_INDEX] * (len(labels) - len(ids))
        assert full["labels"][row].tolist()[: len(ids)] == ids
        assert batch["attention_mask"][row].sum() == len(ids)


def test_completion_only_loss_ignores_prompt_targets(tok):
    model, _ = load_model("nano", tok, seed=3)
    examples = encode_rows(tok, toy_rows(3, seed=6), 1024)
    batch = collate(examples, tok.pad_token_id, completion_only_loss=True)
    with torch.no_grad():
        loss, count = summed_token_loss(model, batch)
        # Independent computation: log-probs of the completion tokens only.
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
        expected, expected_count = 0.0, 0
        for row, (ids, mask) in enumerate(examples):
            for t in range(1, len(ids)):
                if mask[t]:
                    expected -= float(logp[row, t - 1, ids[t]])
                    expected_count += 1
        full = collate(examples, tok.pad_token_id, completion_only_loss=False)
        full_loss, full_count = summed_token_loss(model, full)
    assert count == expected_count
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Training on all tokens does add the prompt terms.
    assert full_count > count and float(full_loss) > float(loss)


def test_batches_cover_each_epoch_once_within_budget(tok):
    rows = toy_rows(50, seed=2)
    lengths = [len(ids) for ids, _ in encode_rows(tok, rows, 1024)]
    cfg = SFTConfig(tokens_per_batch=400, bucket_chunk_size=16, seed=4)
    for epoch in range(3):
        batches = epoch_batches(lengths, cfg, epoch)
        assert sorted(i for b in batches for i in b) == list(range(50))
        for b in batches:
            assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 400
    assert epoch_batches(lengths, cfg, 0) != epoch_batches(lengths, cfg, 1)
    assert epoch_batches(lengths, cfg, 1) == epoch_batches(lengths, SFTConfig(tokens_per_batch=400, bucket_chunk_size=16, seed=4), 1)
    head = micro_batches_from(lengths, cfg, 0)
    stream = [next(head)[1] for _ in range(40)]
    tail = micro_batches_from(lengths, cfg, 17)
    assert [next(tail)[1] for _ in range(23)] == stream[17:]


def test_bucketing_wastes_less_padding_than_random_order(tok):
    rows = toy_rows(200, seed=8)
    lengths = [len(ids) for ids, _ in encode_rows(tok, rows, 1024)]

    def pad_fraction(group: bool) -> float:
        batches = epoch_batches(lengths, SFTConfig(tokens_per_batch=600, group_by_length=group), 0)
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return 1 - sum(lengths) / padded

    assert pad_fraction(True) < pad_fraction(False)


def test_lr_schedule_warms_up_then_decays():
    cfg = SFTConfig(max_steps=100, warmup_ratio=0.1, min_lr_ratio=0.1)
    factors = [lr_factor(s, cfg) for s in range(100)]
    assert factors[0] < factors[5] < factors[9] <= 1.0
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert lr_factor(50, SFTConfig(max_steps=100, warmup_ratio=0.1, lr_scheduler_type="constant")) == 1.0


def _resume_cfg(**kw) -> SFTConfig:
    kw.setdefault("max_steps", 12)
    return SFTConfig(learning_rate=5e-3, tokens_per_batch=300, gradient_accumulation_steps=2,
                     bucket_chunk_size=8, logging_steps=1, eval_steps=0, eval_size=0, save_steps=4, seed=7, **kw)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tok, tmp_path):
    rows = toy_rows(24, seed=4)
    straight, _ = load_model("nano", tok, seed=1)
    train_sft(_resume_cfg(), straight, tok, rows, [], tmp_path / "straight", progress=False)

    killed, _ = load_model("nano", tok, seed=1)
    first = train_sft(_resume_cfg(), killed, tok, rows, [], tmp_path / "killed", progress=False, stop_after=6)
    assert first["stopped"] and not (tmp_path / "killed" / "sft").exists()
    resumed, _ = load_model("nano", tok, seed=123)  # different init: the checkpoint must overwrite it
    train_sft(_resume_cfg(), resumed, tok, rows, [], tmp_path / "killed", resume=True, progress=False)

    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    straight_log = [r for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl")]
    resumed_log = [r for r in read_jsonl(tmp_path / "killed" / "metrics.jsonl")]
    assert [r["step"] for r in resumed_log] == list(range(1, 13))  # steps 5-6 of the killed run not doubled
    assert [r["loss"] for r in resumed_log] == pytest.approx([r["loss"] for r in straight_log], rel=1e-5)
    assert [r["num_tokens"] for r in resumed_log] == [r["num_tokens"] for r in straight_log]
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "killed" / "sft")
    torch.testing.assert_close(final.state_dict()["model.norm.weight"], straight.state_dict()["model.norm.weight"])


def test_resume_refuses_changed_options_and_fresh_runs_refuse_old_checkpoints(tok, tmp_path):
    rows = toy_rows(12, seed=4)
    model, _ = load_model("nano", tok, seed=1)
    train_sft(_resume_cfg(), model, tok, rows, [], tmp_path, progress=False, stop_after=4)
    with pytest.raises(UserError, match="seed"):
        changed = _resume_cfg()
        changed.seed = 8
        train_sft(changed, model, tok, rows, [], tmp_path, resume=True, progress=False)
    with pytest.raises(UserError, match="resume"):
        train_sft(_resume_cfg(), model, tok, rows, [], tmp_path, progress=False)


@pytest.mark.parametrize("field,value", [("max_steps", -1), ("num_train_epochs", 0), ("warmup_ratio", 1.5), ("lr_scheduler_type", "step"), ("tokens_per_batch", -1)])
def test_bad_options_are_user_errors_before_any_work(tok, tmp_path, field, value):
    cfg = SFTConfig()
    setattr(cfg, field, value)
    model, _ = load_model("nano", tok)
    with pytest.raises(UserError, match=field):
        train_sft(cfg, model, tok, toy_rows(2), [], tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_load_model_user_errors(tok, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json"):
        load_model(tmp_path / "empty")
    model, _ = load_model("nano", tok)
    model.config.save_pretrained(tmp_path / "noweights")
    tok.save_pretrained(tmp_path / "noweights")
    with pytest.raises(UserError, match="no model weights"):
        load_model(tmp_path / "noweights")
    model.save_pretrained(tmp_path / "ok")
    tok.save_pretrained(tmp_path / "ok")
    bigger = build_tokenizer(toy_texts(toy_rows(300, seed=99)) + [f"Word{chr(65 + i)}" for i in range(20)])
    assert len(bigger) > model.config.vocab_size
    with pytest.raises(UserError, match="embedding rows"):
        load_model(tmp_path / "ok", tokenizer=bigger)
    with pytest.raises(UserError, match="preset"):
        load_model("huge", tok)


def test_presets_are_seeded_and_eager(tok):
    a, _ = load_model("tiny", tok, seed=0)
    b, _ = load_model("tiny", tok, seed=0)
    c, _ = load_model("tiny", tok, seed=1)
    assert a.config._attn_implementation == "eager" and a.config.tie_word_embeddings
    assert a.config.vocab_size == len(tok)
    assert 0.5e6 < sum(p.numel() for p in a.parameters()) < 2e6
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_epochs_set_the_step_count_from_the_bucketed_batches():
    from coinfluence.training.sft import epoch_batches, steps_for_epochs

    lengths = [10 + (7 * i) % 50 for i in range(200)]
    cfg = SFTConfig(tokens_per_batch=256, num_train_epochs=2, gradient_accumulation_steps=1, seed=3)
    per_epoch = [len(epoch_batches(lengths, cfg, e)) for e in range(3)]
    assert steps_for_epochs(lengths, cfg) == per_epoch[0] + per_epoch[1]
    half = SFTConfig(tokens_per_batch=256, num_train_epochs=2.5, gradient_accumulation_steps=2, seed=3)
    assert steps_for_epochs(lengths, half) == -(-(per_epoch[0] + per_epoch[1] + -(-per_epoch[2] // 2)) // 2)
    longer = [2 * n for n in lengths]  # longer rows: fewer per batch, so more steps for the same epochs
    assert steps_for_epochs(longer, cfg) > steps_for_epochs(lengths, cfg)


def test_an_epoch_budget_resumes_and_ends_at_its_step_count(tok, tmp_path):
    from coinfluence.models.format import encode_example
    from coinfluence.training.sft import steps_for_epochs

    rows = toy_rows(24, seed=4)
    cfg = _resume_cfg(max_steps=0, num_train_epochs=3)
    lengths = [len(encode_example(tok, r["prompt"], r["completion"])[0]) for r in rows]
    model, _ = load_model("nano", tok, seed=1)
    assert train_sft(cfg, model, tok, rows, [], tmp_path, progress=False, stop_after=4)["stopped"]
    done = train_sft(cfg, model, tok, rows, [], tmp_path, resume=True, progress=False)
    assert done["step"] == steps_for_epochs(lengths, cfg) > 0
