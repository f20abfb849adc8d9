"""The word-level task tokenizer: exact round-trip, single-token answer markers, save/load."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from coinfluence.models.format import decode_completion, encode_completion, encode_example, encode_prompt
from coinfluence.models.tokenizer import build_tokenizer, unknown_pieces
from coinfluence.tasks.answer import ANSWER_CLOSE, ANSWER_OPEN, extract_answer, reward
from toy_data import toy_rows, toy_texts


@pytest.fixture(scope="module")
def rows():
    return toy_rows(40, seed=3)


@pytest.fixture(scope="module")
def tok(rows):
    return build_tokenizer(toy_texts(rows))


def test_task_texts_round_trip_exactly(tok, rows):
    for row in rows:
        for text in (row["prompt"], row["completion"]):
            ids = tok.encode(text, add_special_tokens=False)
            assert tok.unk_token_id not in ids
            assert tok.decode(ids) == text


def test_decoded_completion_keeps_reward_and_answer(tok, rows):
    for row in rows:
        ids = encode_completion(tok, row["completion"])  # ends with eos
        text = decode_completion(tok, ids + [tok.pad_token_id])
        assert text == row["completion"]
        assert reward(text, row["answer"]) == reward(row["completion"], row["answer"]) == 1.0
        assert extract_answer(text) == row["answer"]


def test_answer_markers_are_single_non_special_tokens(tok):
    for marker in (ANSWER_OPEN, ANSWER_CLOSE):
        ids = tok.encode(marker, add_special_tokens=False)
        assert len(ids) == 1
        assert tok.decode(ids, skip_special_tokens=True) == marker
    text = "so k = 7.\n<answer>7</answer>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode([tok.bos_token_id] + ids + [tok.eos_token_id], skip_special_tokens=True) == text


def test_any_integer_is_representable_digit_by_digit(tok):
    text = "<answer>-9081726354</answer>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids
    assert len(ids) == 1 + 1 + 10 + 1  # marker, minus sign, ten digits, marker
    assert tok.decode(ids) == text


def test_apostrophe_and_punctuation_are_pieces(tok):
    pieces = tok.convert_ids_to_tokens(tok.encode("each Zoo's Lion.", add_special_tokens=False))
    assert pieces == ["each", "\u2581Zoo", "'", "s", "\u2581Lion", "."]


def test_spacing_and_newlines_round_trip(tok):
    text = "Define  each Zoo's Lion as p ;\n\nso p = 3 . \n"
    assert unknown_pieces(tok, text) == []
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_word_list_builds_the_same_coverage(rows):
    words = sorted({w for t in toy_texts(rows) for w in t.replace("'", " ").replace(".", " ").replace(";", " ").replace("?", " ").replace(":", " ").split()})
    tok = build_tokenizer(words)
    for row in rows:
        assert unknown_pieces(tok, row["prompt"]) == []
        assert tok.decode(tok.encode(row["completion"], add_special_tokens=False)) == row["completion"]


def test_unseen_word_is_unknown(tok):
    assert unknown_pieces(tok, "each Zebra") == ["\u2581Zebra"]


def test_special_tokens_and_save_load(tok, rows, tmp_path):
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}) == 4
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(tok)
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    for row in rows[:5]:
        assert encode_example(loaded, row["prompt"], row["completion"]) == encode_example(tok, row["prompt"], row["completion"])
        ids = loaded.encode(row["completion"], add_special_tokens=False)
        assert loaded.decode(ids) == row["completion"]


def test_example_format_masks_exactly_the_prompt(tok, rows):
    row = rows[0]
    ids, mask = encode_example(tok, row["prompt"], row["completion"])
    prompt_ids = encode_prompt(tok, row["prompt"])
    assert ids[: len(prompt_ids)] == prompt_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert mask == [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    assert tok.decode(ids[len(prompt_ids):], skip_special_tokens=True) == row["completion"]


def test_chat_template_is_used_when_present(tok, rows):
    chat = build_tokenizer(toy_texts(rows) + ["user", "assistant"])
    chat.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:\n{% endif %}"
    ids = encode_prompt(chat, rows[0]["prompt"])
    assert chat.decode(ids) == f"user: {rows[0]['prompt']}\nassistant:\n"


def test_possessive_pieces_round_trip_and_key_the_name_on_its_owner():
    from coinfluence.tasks.data import DataConfig, make_dataset

    rows = make_dataset(DataConfig(preset="mini2", behaviours="both", seed=1, sft_size=30, rl_size=5, eval_size=5))["sft"]
    tok = build_tokenizer(toy_texts(rows), possessive=True)
    for row in rows:
        for text in (row["prompt"], row["completion"]):
            ids = tok.encode(text, add_special_tokens=False)
            assert tok.decode(ids) == text and tok.unk_token_id not in ids
            pieces = tok.convert_ids_to_tokens(ids)
            assert "'" not in pieces and "s" not in pieces  # never split off
            owners = [p for p in pieces if p.endswith("'s")]
            assert owners and all(p.lstrip("\u2581")[0].isupper() for p in owners)
    plain = build_tokenizer(toy_texts(rows))
    assert len(plain.encode(rows[0]["prompt"])) > len(tok.encode(rows[0]["prompt"]))


def test_train_builds_possessive_tokens_when_the_data_says_so(tmp_path):
    from coinfluence.tasks.data import DataConfig, write_dataset
    from coinfluence.pipeline import task_tokenizer

    for preset, expected in (("mini2", True), ("mini", False)):
        rows = write_dataset(tmp_path / preset, DataConfig(preset=preset, sft_size=10, rl_size=5, eval_size=5))
        tok = task_tokenizer("mini", rows, tmp_path / preset)  # the data's own task config decides
        assert any(p.endswith("'s") for p in tok.get_vocab()) == expected
