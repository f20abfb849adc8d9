"""Property-based fuzz of the answer parser, the step checker and the JSONL readers (issue 14):
whatever the text, they return a value or a one-line UserError, never another exception."""

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from coinfluence.errors import UserError  # noqa: E402
from coinfluence.io import read_jsonl, write_jsonl  # noqa: E402
from coinfluence.tasks.answer import extract_answer, format_answer, reward  # noqa: E402
from coinfluence.tasks.igsm.check import check_steps  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@FAST
@given(st.text(), st.integers(-10**30, 10**30))
def test_the_last_answer_marker_wins_after_any_text(text, value):
    assert extract_answer(text + format_answer(value)) == value
    assert reward(text + format_answer(value), value) == 1.0


@FAST
@given(st.text(), st.one_of(st.none(), st.text(), st.integers(), st.floats(), st.lists(st.integers())))
def test_the_reward_never_raises(text, answer):
    assert reward(text, answer) in (0.0, 1.0)


@FAST
@given(st.text(), st.text())
def test_the_step_checker_never_raises(prompt, completion):
    report = check_steps(prompt, completion)
    assert isinstance(report.verdict, str)


@FAST
@given(st.lists(st.dictionaries(st.text(), json_values, max_size=5), min_size=1, max_size=6))
def test_jsonl_round_trips_and_a_torn_last_line_is_dropped(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, rows)
    assert read_jsonl(path) == json.loads(json.dumps(rows))
    last = json.dumps({"stage": "grpo", "step": 9})
    with open(path, "a", encoding="utf-8") as f:
        f.write(last[: len(last) // 2])
    assert read_jsonl(path, torn_tail_ok=True) == json.loads(json.dumps(rows))
    with pytest.raises(UserError, match=f"{path.name}:{len(rows) + 1}"):
        read_jsonl(path)


@FAST
@given(st.binary(max_size=300))
def test_jsonl_of_any_bytes_is_rows_or_one_user_error(tmp_path, data):
    path = tmp_path / "any.jsonl"
    path.write_bytes(data)
    try:
        rows = read_jsonl(path, torn_tail_ok=True)
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(rows, list)


def test_deeply_nested_json_is_one_user_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(UserError, match="nested too deeply"):
        read_jsonl(path)
