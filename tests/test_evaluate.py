"""Evaluation: batched greedy decoding, eval.json and per-row records, sampling, α."""

from __future__ import annotations

import json

import pytest

from coinfluence.errors import UserError
from coinfluence.io import read_jsonl
from coinfluence.models import build_tokenizer, load_model
from coinfluence.models.format import encode_completion
from coinfluence.tasks.igsm import BEHAVIOURS
from coinfluence.training.evaluate import (
    alpha_spread,
    behaviour_summary,
    evaluate_checkpoint,
    generate_completions,
    hf_generate,
    sample_accuracy,
    evaluate_rows,
)
from coinfluence.training.sft import SFTConfig, train_sft
from toy_data import toy_rows, toy_texts


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(toy_texts(toy_rows(300, seed=99)))


@pytest.fixture(scope="module")
def trained(tok, tmp_path_factory):
    rows = toy_rows(8, seed=11)
    model, _ = load_model("nano", tok, seed=2)
    cfg = SFTConfig(max_steps=150, learning_rate=1e-2, eval_steps=0, eval_size=0, save_steps=0)
    train_sft(cfg, model, tok, rows, [], tmp_path_factory.mktemp("train"), progress=False)
    return model, rows


def test_batched_greedy_equals_one_at_a_time(trained, tok):
    model, rows = trained
    prompts = [r["prompt"] for r in rows] + [toy_rows(1, seed=50)[0]["prompt"]]  # one unseen prompt too
    batched = generate_completions(model, tok, prompts, max_new_tokens=100, batch_size=16)
    single = [generate_completions(model, tok, [p], max_new_tokens=100)[0] for p in prompts]
    assert batched == single
    assert [b[0] for b in batched[:-1]] == [r["completion"] for r in rows]


def test_generation_stops_at_eos(trained, tok):
    model, rows = trained
    prompt_ids = [[tok.bos_token_id] + tok.encode(rows[0]["prompt"] + "\n", add_special_tokens=False)]
    out = hf_generate(model, tok, prompt_ids, max_new_tokens=200)
    expected = encode_completion(tok, rows[0]["completion"])[:-1]  # without the eos
    assert out == [[expected]]


def test_evaluate_checkpoint_writes_accuracy_and_rows(trained, tok, tmp_path):
    model, rows = trained
    wrong = [dict(r, answer=r["answer"] + 1) for r in rows[:3]]  # the model's answer no longer matches
    results = evaluate_checkpoint(model, tok, {"val_id": rows, "val_ood": wrong + rows[3:5]}, tmp_path, "sft", max_new_tokens=100)
    assert results["val_id"]["accuracy"] == 1.0
    assert results["val_ood"]["accuracy"] == pytest.approx(2 / 5)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["checkpoints"]["sft"] == results
    records = read_jsonl(tmp_path / "eval" / "sft.jsonl")
    assert len(records) == len(rows) + 5
    assert {r["split"] for r in records} == {"val_id", "val_ood"}
    assert [r["reward"] for r in records if r["split"] == "val_ood"] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert records[0]["id"] == rows[0]["id"] and records[0]["completion"] == rows[0]["completion"]
    # A second checkpoint is merged into the same eval.json, a limit truncates each split.
    evaluate_checkpoint(model, tok, {"val_id": rows}, tmp_path, "grpo/final", max_new_tokens=100, limit=2)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert set(saved["checkpoints"]) == {"sft", "grpo/final"}
    assert saved["checkpoints"]["grpo/final"]["val_id"]["num_rows"] == 2
    assert len(read_jsonl(tmp_path / "eval" / "grpo_final.jsonl")) == 2


def test_sampling_is_seeded_and_alpha_counts_correct_samples(tok):
    model, _ = load_model("nano", tok, seed=5)  # untrained: samples vary
    rows = toy_rows(3, seed=12)
    a = generate_completions(model, tok, [r["prompt"] for r in rows], max_new_tokens=12, temperature=1.0, num_samples=4, seed=1)
    b = generate_completions(model, tok, [r["prompt"] for r in rows], max_new_tokens=12, temperature=1.0, num_samples=4, seed=1)
    c = generate_completions(model, tok, [r["prompt"] for r in rows], max_new_tokens=12, temperature=1.0, num_samples=4, seed=2)
    assert a == b and a != c
    assert all(len(s) == 4 for s in a)
    assert len({s for samples in a for s in samples}) > 1


def test_sample_accuracy_with_a_replaced_generator(tok):
    rows = toy_rows(4, seed=13)
    correct = {tuple(tok.encode(r["prompt"] + "\n", add_special_tokens=False)): r for r in rows}

    def fake_generate(model, tokenizer, prompt_ids, *, num_samples, **_):
        # Row k gets k correct samples out of num_samples: α = k / n.
        out = []
        for k, ids in enumerate(prompt_ids):
            row = correct[tuple(ids[1:])]
            good = tokenizer.encode(row["completion"], add_special_tokens=False)
            bad = tokenizer.encode("<answer>999</answer>", add_special_tokens=False)
            out.append([good if s < k else bad for s in range(num_samples)])
        return out

    alphas = sample_accuracy(None, tok, rows, n=4, temperature=1.0, generate_fn=fake_generate)
    assert alphas == [0.0, 0.25, 0.5, 0.75]
    assert alpha_spread(alphas) == 0.75
    summary, records = evaluate_rows(None, tok, rows, n=4, temperature=1.0, generate_fn=fake_generate)
    assert summary["mean@4"] == pytest.approx(1.5 / 4) and summary["pass@4"] == 0.75 and summary["alpha_spread"] == 0.75
    assert len(records) == 16


def test_behaviour_summary_against_counting_by_hand():
    def rec(reward, attempts=0, restates=0):
        counts = dict.fromkeys(BEHAVIOURS, 0) | {"attempts": attempts, "restates": restates}
        return {"reward": reward, "behaviours": counts}

    records = [rec(1.0, attempts=2), rec(0.0),  # query A: one of each kind
               rec(1.0), rec(1.0),  # query B: none with behaviours
               rec(0.0, restates=1), rec(1.0, attempts=1, restates=1)]  # query C: all with
    s = behaviour_summary(records, n=2)
    assert s["behaviours/attempts"] == pytest.approx(3 / 6) and s["behaviours/restates"] == pytest.approx(2 / 6)
    assert s["behaviours/revisits"] == 0 and s["behaviours/frac"] == pytest.approx(3 / 6)
    assert s["accuracy_with_behaviours"] == pytest.approx(2 / 3) and s["accuracy_without_behaviours"] == pytest.approx(2 / 3)
    assert s["paired_queries"] == 1  # only A has both kinds
    assert s["paired_accuracy_with_behaviours"] == 1.0 and s["paired_accuracy_without_behaviours"] == 0.0
    assert behaviour_summary([rec(1.0)], n=1)["paired_accuracy_with_behaviours"] is None


def test_scored_records_count_the_behaviours_of_each_completion():
    rows = toy_rows(2, seed=5)
    attempt = "Try each Oak's Nail: it needs each Elm's Cow, which is not known yet, so come back later.\n"
    tok = build_tokenizer([*toy_texts(rows), attempt])

    def fake_generate(model, tokenizer, prompt_ids, *, num_samples, **_):
        texts = [attempt + "<answer>1</answer>", "<answer>1</answer>"]
        return [[tokenizer.encode(t, add_special_tokens=False) for t in texts] for _ in prompt_ids]

    summary, records = evaluate_rows(None, tok, rows, n=2, temperature=1.0, generate_fn=fake_generate)
    assert [r["behaviours"]["attempts"] for r in records] == [1, 0, 1, 0]
    assert summary["behaviours/attempts"] == 0.5 and summary["behaviours/frac"] == 0.5
    assert summary["paired_queries"] == 2


def test_difficulty_summary_groups_each_querys_samples_by_the_steps_it_needs():
    from coinfluence.tasks.score import difficulty_summary

    def rec(prompt, reward, verdict):
        return {"prompt": prompt, "reward": reward, "verdict": verdict}

    steps = {"easy": 3, "easy too": 3, "hard": 5, "unreadable": None}
    records = [rec("easy", 1.0, "correct"), rec("easy", 1.0, "wrong_inputs"),
               rec("hard", 0.0, "wrong_arithmetic"), rec("hard", 1.0, "correct"),
               rec("easy too", 0.0, "wrong_inputs"), rec("easy too", 0.0, "wrong_inputs"),
               rec("unreadable", 1.0, "correct"), rec("unreadable", 1.0, "correct")]
    s = difficulty_summary(records, 2, steps.get)
    assert s == {"steps/3/num_rows": 2, "steps/3/accuracy": 0.5, "steps/3/step_accuracy": 0.25,
                 "steps/5/num_rows": 1, "steps/5/accuracy": 0.5, "steps/5/step_accuracy": 0.5}
    assert difficulty_summary(records, 2, lambda prompt: None) == {}


def test_greedy_with_many_samples_is_a_user_error(tok):
    with pytest.raises(UserError, match="temperature"):
        sample_accuracy(None, tok, toy_rows(1), n=4, temperature=0.0)
    with pytest.raises(UserError):
        evaluate_rows(None, tok, toy_rows(1), n=0)


def test_alpha_spread():
    assert alpha_spread([0.0, 1.0, 0.5, 0.125]) == 0.5
    assert alpha_spread([0.0, 0.0]) == 0.0


def test_step_verified_accuracy_and_guess_baseline_of_scored_samples():
    """Three kinds of sample per query: faithful, a right answer with a wrong step, a copied number."""
    from coinfluence.tasks.data import DataConfig, make_dataset
    from coinfluence.tasks.score import guess_baseline, stated_numbers

    rows = make_dataset(DataConfig(preset="mini", behaviours="none", seed=3, sft_size=40, rl_size=5, eval_size=5))["sft"]
    rows = [r for r in rows if " + " in r["completion"].splitlines()[-2]][:4]
    assert len(rows) == 4
    tok = build_tokenizer([*toy_texts(rows), *[t for r in rows for t in r["completion"].split("\n")]])

    def garbled(completion):  # the last step names its inputs wrongly, the answer stays right
        lines = completion.splitlines()
        lines[-2] = lines[-2].replace(" + ", " - ", 1)
        return "\n".join(lines)

    def copied(row):
        return f"<answer>{stated_numbers(row['prompt'])[0]}</answer>"

    by_prompt = {r["prompt"]: r for r in rows}

    def fake_generate(model, tokenizer, prompt_ids, *, num_samples, **_):
        out = []
        for ids in prompt_ids:
            row = by_prompt[tokenizer.decode(ids, skip_special_tokens=True).rstrip("\n")]
            texts = [row["completion"], garbled(row["completion"]), copied(row)]
            out.append([tokenizer.encode(t, add_special_tokens=False) for t in texts])
        return out

    summary, records = evaluate_rows(None, tok, rows, n=3, temperature=1.0, generate_fn=fake_generate)
    assert [r["verdict"] == "correct" for r in records[:3]] == [True, False, False]
    assert all(r["prompt"] == rows[0]["prompt"] for r in records[:3])  # `coinfluence score` can read them
    assert summary["accuracy"] == pytest.approx(2 / 3)  # the garbled sample still has the right answer
    assert summary["step_accuracy"] == pytest.approx(1 / 3) and summary["step_pass@3"] == 1.0
    assert summary["faithful_share"] == pytest.approx(1 / 2)
    shares = {k: v for k, v in summary.items() if k.startswith("verdict/")}
    assert shares["verdict/correct"] == summary["step_accuracy"] and sum(shares.values()) == pytest.approx(1)
    assert len(shares) > 1  # the garbled and the copied samples fail for their own reasons
    assert summary["answer_stated"] == pytest.approx(1 / 3)
    assert summary["guess/stated"] == guess_baseline(rows)["guess/stated"]
    assert summary["guess/stated"] == sum(r["answer"] in stated_numbers(r["prompt"]) for r in rows) / 4
    from coinfluence.tasks.registry import get_task

    steps = [get_task("igsm").needed_steps(r["prompt"]) for r in rows]
    assert sum(summary[f"steps/{k}/num_rows"] for k in set(steps)) == 4
    assert all(summary[f"steps/{k}/step_accuracy"] == pytest.approx(1 / 3) for k in set(steps))


def test_guess_baseline_by_hand():
    from coinfluence.tasks.score import guess_baseline

    rows = [{"prompt": "A is 3. B is 3. C is 5. D is 1.5 or v2.", "answer": 3},   # stated, and the most frequent number
            {"prompt": "A is 4. B is 9.", "answer": 9},           # stated, not the first/mode
            {"prompt": "A is 2. B is 7.", "answer": 12},          # not stated
            {"prompt": "Nothing here.", "answer": 12}]
    g = guess_baseline(rows)
    assert g == {"guess/stated": 0.5, "guess/mode_stated": 0.25, "guess/majority": 0.5}
