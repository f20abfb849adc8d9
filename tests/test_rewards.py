"""The reward option (``--reward``): every built-in reader, a user's module:function, and the same
option reaching GRPO's scores, eval's accuracy and analyze's rollouts."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from coinfluence.errors import UserError
from coinfluence.influence.analyze import AnalyzeOptions, resolve_options, sample_groups
from coinfluence.models import build_tokenizer, load_model
from coinfluence.tasks.rewards import REWARDS, last_boxed, reward_fn, reward_scores
from coinfluence.training.evaluate import evaluate_rows
from coinfluence.training.grpo import GRPOConfig, reward_completions, validate_config
from toy_data import toy_rows, toy_texts

TEXTS = [
    "The answer is 12.",
    "First 3, then 4 + 8 = 12",
    "I think 1,200 apples, no wait, 12",
    "So \\boxed{12} is it. Later 13",
    "\\boxed{\\frac{1}{2}} and \\boxed{ 12 }",
    "<answer>12</answer>",
    "<answer>11</answer> 12",
    "12",
    "no number at all",
    "-12",
]


@pytest.mark.parametrize("name, expected", [
    ("first-number", [1, 0, 0, 1, 0, 1, 0, 1, 0, 0]),
    ("last-number", [1, 1, 1, 0, 1, 1, 1, 1, 0, 0]),
    ("boxed", [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]),
    ("answer", [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
    ("exact", [0, 0, 0, 0, 0, 1, 0, 1, 0, 0]),
])
def test_builtin_rewards_read_the_answer_where_they_say(name, expected):
    assert reward_scores(name, [""] * len(TEXTS), TEXTS, ["12"] * len(TEXTS)) == [float(e) for e in expected]


def test_numbers_compare_as_numbers_and_text_as_text():
    assert reward_scores("last-number", ["", ""], ["it is 2.50", "it is 1,000"], ["2.5", 1000]) == [1.0, 1.0]
    assert reward_fn("boxed")("", "\\boxed{Lion}", "Lion") == 1.0
    assert reward_fn("boxed")("", "\\boxed{Lion}", "lion") == 0.0
    assert last_boxed("\\boxed{a{b}c} x") == "a{b}c" and last_boxed("\\boxed{open") is None
    assert reward_fn("last-number")("", None, 3) == 0.0  # bad text scores 0, never raises


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        def has_answer_word(completion, answer, prompt):
            return float(str(answer) in completion.split() and prompt.startswith("Q"))
        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_a_user_function_is_called_with_completion_answer_prompt(user_module):
    fn = reward_fn(f"{user_module}:has_answer_word")
    assert fn("Q: x", "it is 7 .", 7) == 1.0 and fn("R: x", "it is 7 .", 7) == 0.0 and fn("Q", "it is 8", 7) == 0.0


@pytest.mark.parametrize("name, message", [
    ("nope", "one of answer"), ("a:b:c", "one of"), (":f", "one of"),
    ("no_such_module_xyz:f", "cannot import"), ("json:no_such_fn", "no function"),
])
def test_unknown_rewards_are_user_errors(name, message):
    with pytest.raises(UserError, match=message):
        reward_fn(name)
    with pytest.raises(UserError, match=message):
        validate_config(GRPOConfig(reward=name))


def test_every_listed_reward_resolves():
    assert all(callable(reward_fn(name)) for name in REWARDS)


def test_grpo_scores_with_the_chosen_reward():
    correct, total = reward_completions(["it is 5", "<answer>5</answer>"], [5, 5], 0.5, ["q", "q"], "last-number")
    assert correct.tolist() == [1.0, 1.0]
    assert total.tolist() == [1.0, 1.5]  # the format bonus still reads the marker
    assert reward_completions(["it is 5"], [5], 0.0, None, "answer")[0].tolist() == [0.0]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(toy_texts(toy_rows(50, seed=5)) + ["it is"])


def test_eval_accuracy_uses_and_records_the_reward(tok):
    rows = toy_rows(3, seed=7)

    def says_the_number(model, tokenizer, prompt_ids, *, num_samples, **_):
        return [[tokenizer.encode(f"it is {row['answer']}", add_special_tokens=False)] * num_samples for row in rows]

    plain, _ = evaluate_rows(None, tok, rows, generate_fn=says_the_number)
    read, records = evaluate_rows(None, tok, rows, generate_fn=says_the_number, reward="last-number")
    assert plain["accuracy"] == 0.0 and plain["reward"] == "answer"
    assert read["accuracy"] == 1.0 and read["reward"] == "last-number"
    assert [r["reward"] for r in records] == [1.0, 1.0, 1.0]


def test_analyze_scores_rollouts_with_the_chosen_reward(tok, user_module, tmp_path):
    model, _ = load_model("nano", tok, seed=1)
    rows = toy_rows(2, seed=8)
    knobs = {"max_completion_length": 6, "temperature": 1.0, "reward": f"{user_module}:has_answer_word"}
    got = sample_groups(model, tok, rows, 3, knobs, 0, "train", False)
    fn = reward_fn(knobs["reward"])
    expected = [fn(r["prompt"], t, r["answer"]) for r, t in zip([r for r in rows for _ in range(3)], got["texts"])]
    assert got["rewards"].tolist() == expected and got["reward_kind"] == knobs["reward"]
    # Unset, the analysis takes the reward the checkpoint's GRPO run trained with.
    (tmp_path / "grpo_config.json").write_text(json.dumps({"reward": "boxed"}))
    assert resolve_options(AnalyzeOptions(), tmp_path)["reward"] == "boxed"
    assert resolve_options(AnalyzeOptions(reward="exact"), tmp_path)["reward"] == "exact"
    assert isinstance(got["rewards"], torch.Tensor)


def test_progress_credits_the_steps_right_before_the_first_wrong_one():
    import re

    from coinfluence.tasks.data import DataConfig, make_dataset
    from coinfluence.tasks.igsm import parse_question

    rows = make_dataset(DataConfig(preset="mini2", behaviours="none", seed=3, sft_size=40, rl_size=5, eval_size=5))["sft"]
    checked = 0
    for row in rows:
        lines = row["completion"].splitlines()
        solves = [i for i, line in enumerate(lines) if " = " in line]
        needed = len(parse_question(row["prompt"]).necessary())
        assert reward_scores("progress", [row["prompt"]], [row["completion"]], [row["answer"]]) == [1.0]
        for k, i in enumerate(solves):  # break step k+1: k steps before it check out
            broken = list(lines)
            broken[i] = re.sub(r"(\d+)\.$", lambda m: f"{int(m.group(1)) + 1}.", broken[i])
            got = reward_scores("progress", [row["prompt"]], ["\n".join(broken)], [row["answer"]])[0]
            assert got == pytest.approx(0.5 * k / needed), (k, broken[i])
            checked += 1
        wrong = row["completion"].replace(f"<answer>{row['answer']}</answer>", f"<answer>{row['answer'] + 1}</answer>")
        assert reward_scores("progress", [row["prompt"]], [wrong], [row["answer"]]) == [0.5]  # all steps, wrong answer
    assert checked > len(rows)
    assert reward_scores("progress", ["not a question"], ["x = 1"], [1]) == [0.0]
