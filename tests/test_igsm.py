"""The iGSM generator: exact op counts, the checker, splits, pairing and determinism."""

import random
import re
from pathlib import Path

import pytest

from coinfluence.errors import UserError
from coinfluence.tasks.answer import extract_answer, reward
from coinfluence.tasks.bridge import behaviour_preset
from coinfluence.tasks.data import DataConfig, make_dataset, write_dataset
from coinfluence.tasks.registry import get_task
from coinfluence.tasks.igsm import BEHAVIOURS, PRESETS, check_steps, count_behaviours, generate, get_preset, parse_question, render_question, render_solution
from coinfluence.tasks.igsm.dag import op_count

SMALL = dict(sft_size=60, rl_size=60, eval_size=30)


def _problems(preset, n, seed=0):
    cfg = PRESETS[preset]
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        lo, hi = (cfg.op_id[0], cfg.op_ood[1])
        yield generate(rng, cfg, rng.randint(lo, hi)), rng


@pytest.mark.parametrize("preset", ["mini", "mini2", "paper"])
def test_op_count_matches_definition_from_the_question_text(preset):
    for problem, rng in _problems(preset, 150):
        parsed = parse_question(render_question(problem, rng))
        # Recount from the parsed DAG: Σ max(1, in_degree - 1) over ancestors of the target,
        # a constant counting as one input.
        necessary, stack = {parsed.target}, [parsed.target]
        while stack:
            for p in parsed.defs[stack.pop()][1]:
                if p not in necessary:
                    necessary.add(p)
                    stack.append(p)
        recount = sum(
            max(1, len(parsed.defs[k][1]) + (parsed.defs[k][2] is not None) - 1) for k in necessary
        )
        assert recount == problem.op == op_count(problem.nodes, problem.necessary)
        assert parsed.values[parsed.target] == problem.answer
        assert len(necessary) == len(problem.necessary)


@pytest.mark.parametrize("preset", ["mini", "mini2", "paper"])
def test_values_are_bounded_and_sentences_precede_the_question(preset):
    cfg = PRESETS[preset]
    for problem, rng in _problems(preset, 100):
        assert all(abs(n.value) < cfg.max_value for n in problem.nodes)
        text = render_question(problem, rng)
        sentences = re.split(r"(?<=[.?])\s+", text)
        assert text.count("Question:") == 1 and sentences[-1].startswith("Question:")
        assert len(sentences) == 1 + sum(n.op != "abstract" for n in problem.nodes)


@pytest.mark.parametrize("preset", ["mini", "mini2", "paper"])
@pytest.mark.parametrize("behaviours", ["none", "explore", "exploit", "both"])
def test_checker_accepts_every_generated_completion(preset, behaviours):
    splits = make_dataset(DataConfig(preset=preset, behaviours=behaviours, seed=3, **SMALL))
    for rows in splits.values():
        for row in rows:
            report = check_steps(row["prompt"], row["completion"])
            assert report.ok, (report, row["completion"])
            assert reward(row["completion"], row["answer"]) == 1.0


@pytest.mark.parametrize("preset", ["mini", "mini2", "paper"])
@pytest.mark.parametrize("behaviours", ["none", "explore", "exploit", "both"])
def test_behaviour_counts_read_from_text_equal_what_injection_recorded(preset, behaviours):
    splits = make_dataset(DataConfig(preset=preset, behaviours=behaviours, seed=4, **SMALL))
    totals = dict.fromkeys(BEHAVIOURS, 0)
    for rows in splits.values():
        for row in rows:
            counts = count_behaviours(row["completion"])
            assert counts == {k: row["meta"]["injected"][k] for k in BEHAVIOURS}, row["completion"]
            totals = {k: totals[k] + counts[k] for k in BEHAVIOURS}
    expected_kinds = {"none": set(), "explore": {"attempts", "revisits"}, "exploit": {"restates", "expansions"},
                      "both": {"attempts", "revisits", "restates", "expansions"}}[behaviours]
    assert {k for k, v in totals.items() if v > 0} >= expected_kinds
    assert all(totals[k] == 0 for k in BEHAVIOURS if k not in expected_kinds | {"early"})


def test_behaviour_counts_ignore_plain_steps_and_read_wrong_quantities():
    plain = "Let w be each Pig's Horn; then w = 1.\nDefine x as each Mill's Hen; so x = 9 * w = 9 * 1 = 9.\n<answer>9</answer>"
    assert count_behaviours(plain) == dict.fromkeys(BEHAVIOURS, 0)
    odd = ("Can we get each Oak's Nail now? Not yet, each Elm's Cow is still unknown.\n"
           "Recall that each Oak's Nail is given as 4.\n"
           "Let s be each Oak's total Barn; then s = a + b + c = 1 + 2 + 3 = 3 + 3 = 6.")
    assert count_behaviours(odd) == {"attempts": 1, "early": 0, "revisits": 0, "restates": 1, "expansions": 1}
    assert count_behaviours("") == dict.fromkeys(BEHAVIOURS, 0)


@pytest.mark.parametrize("aug", [{"question_aug": 3}, {"answer_aug": 3}])
def test_checker_accepts_augmented_rows(aug):
    rows = make_dataset(DataConfig(seed=1, sft_size=40, rl_size=5, eval_size=5, **aug))["sft"]
    assert all(check_steps(r["prompt"], r["completion"]).ok for r in rows)


def _solve_lines(completion):
    return [i for i, line in enumerate(completion.splitlines()) if " = " in line]


def _bridge_rows(n=80):
    return make_dataset(DataConfig(preset="mini", behaviours="both", seed=5, sft_size=n, rl_size=5, eval_size=5))["sft"]


def test_checker_rejects_a_wrong_value():
    for row in _bridge_rows():
        lines = row["completion"].splitlines()
        i = _solve_lines(row["completion"])[0]
        lines[i] = re.sub(r"= (\d+)\.$", lambda m: f"= {int(m.group(1)) + 1}.", lines[i])
        report = check_steps(row["prompt"], "\n".join(lines))
        assert not report.ok and report.first_error_step == 1
        assert report.verdict in ("wrong_value", "wrong_arithmetic", "wrong_inputs")


def test_checker_rejects_a_skipped_step():
    for row in _bridge_rows():
        solves = _solve_lines(row["completion"])
        if len(solves) < 2:
            continue
        lines = row["completion"].splitlines()
        del lines[solves[0]]  # the first solved quantity is an input of a later step
        report = check_steps(row["prompt"], "\n".join(lines))
        assert report.verdict in ("undefined_variable", "missing_target"), report


def test_checker_rejects_a_wrong_final_answer_and_missing_marker():
    for row in _bridge_rows(30):
        wrong = row["completion"].replace(f"<answer>{row['answer']}</answer>", f"<answer>{row['answer'] + 1}</answer>")
        assert check_steps(row["prompt"], wrong).verdict == "wrong_final_answer"
        assert reward(wrong, row["answer"]) == 0.0
        cut = row["completion"].rsplit("\n", 1)[0]
        assert check_steps(row["prompt"], cut).verdict == "no_answer"


def test_checker_rejects_wrong_inputs():
    hits = 0
    for row in _bridge_rows():
        lines = row["completion"].splitlines()
        solves = _solve_lines(row["completion"])
        for i in solves[1:]:
            m = re.search(r"= ([a-zA-Z])( [-+*] | = )", lines[i])
            defined = [re.search(r"\b([a-zA-Z]) = ", lines[j]).group(1) for j in solves if j < i]
            other = [v for v in defined if m and v != m.group(1) and v not in lines[i]]
            if m and other:
                lines[i] = lines[i][: m.start(1)] + other[0] + lines[i][m.end(1):]
                report = check_steps(row["prompt"], "\n".join(lines))
                assert report.verdict == "wrong_inputs", report
                hits += 1
                break
    assert hits > 10


def test_reward_never_raises_on_malformed_text():
    for text in ["", None, 3, "<answer>", "<answer>x</answer>", "<answer>--1</answer>", "<answer> 7 </answer>", "\x00"]:
        assert reward(text, 7) in (0.0, 1.0)
        assert check_steps("garbage.", text).verdict == "unparseable_question"
    assert reward("a <answer>1</answer> then <answer>7</answer>", 7) == 1.0
    assert extract_answer("<answer>-3</answer>") == -3


def test_same_seed_gives_identical_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dataset(a, DataConfig(seed=7, **SMALL))
    write_dataset(b, DataConfig(seed=7, **SMALL))
    write_dataset(c, DataConfig(seed=8, **SMALL))
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert "sft.jsonl" in names and "data_config.json" in names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "sft.jsonl").read_bytes() != (c / "sft.jsonl").read_bytes()


def test_paired_rendering_changes_only_completions():
    runs = {b: make_dataset(DataConfig(behaviours=b, seed=2, **SMALL)) for b in ["none", "explore", "exploit", "both"]}
    for split in runs["none"]:
        base = runs["none"][split]
        for b, splits in runs.items():
            rows = splits[split]
            assert [r["id"] for r in rows] == [r["id"] for r in base]
            assert [r["prompt"] for r in rows] == [r["prompt"] for r in base]
            assert [r["answer"] for r in rows] == [r["answer"] for r in base]
    changed = sum(a["completion"] != b["completion"] for a, b in zip(runs["none"]["sft"], runs["both"]["sft"]))
    assert changed > len(runs["none"]["sft"]) // 2


def test_splits_are_disjoint_by_dag():
    splits = make_dataset(DataConfig(preset="mini", seed=4, sft_size=300, rl_size=300, eval_size=100))
    keys = {s: [r["meta"]["dag"] for r in rows] for s, rows in splits.items()}
    for s, ks in keys.items():
        assert len(ks) == len(set(ks)), f"duplicate problem inside {s}"
    train = set(keys["sft"]) | set(keys["rl_train"])
    held_out = set(keys["val_id"]) | set(keys["val_ood"]) | set(keys["test_id"]) | set(keys["test_ood"])
    assert not train & held_out
    assert not set(keys["sft"]) & set(keys["rl_train"])
    assert {r["meta"]["op"] for r in splits["test_ood"]} <= set(range(5, 7))
    assert {r["meta"]["op"] for r in splits["test_id"]} <= set(range(2, 5))


def test_question_and_answer_augmentation_multiply_sft_rows():
    base = make_dataset(DataConfig(seed=6, sft_size=50, rl_size=5, eval_size=5, preset="paper"))["sft"]
    qa = make_dataset(DataConfig(seed=6, sft_size=50, rl_size=5, eval_size=5, preset="paper", question_aug=3))["sft"]
    aa = make_dataset(DataConfig(seed=6, sft_size=50, rl_size=5, eval_size=5, preset="paper", answer_aug=3))["sft"]
    assert len(qa) == len(aa) == 3 * len(base)
    by_problem = lambda rows: {r["meta"]["dag"]: [x for x in rows if x["meta"]["dag"] == r["meta"]["dag"]] for r in rows}
    for group in by_problem(qa).values():
        assert len({r["prompt"] for r in group}) == 3 and len({r["completion"] for r in group}) == 1
        assert len({tuple(sorted(r["prompt"].split(". "))) for r in group}) == 1  # same sentences, new order
    for group in by_problem(aa).values():
        assert len({r["prompt"] for r in group}) == 1 and len({r["completion"] for r in group}) == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(op_id=(4, 2)), "inverted"),
        (dict(op_ood=(5, 40)), "guarantees only"),
        (dict(preset="huge"), "unknown preset"),
        (dict(sft_size=0), "positive"),
        (dict(behaviours="all"), "unknown behaviours"),
        (dict(p_explore=1.5), "out of range"),
    ],
)
def test_bad_options_fail_before_writing(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        write_dataset(tmp_path / "out", DataConfig(**{**SMALL, **overrides}))
    assert not (tmp_path / "out").exists()


def test_files_have_one_schema_for_arrow_json_readers(tmp_path):
    import pyarrow.json as pj

    write_dataset(tmp_path, DataConfig(seed=0, **SMALL))
    table = pj.read_json(tmp_path / "sft.jsonl")
    assert set(table.column_names) == {"id", "prompt", "completion", "answer", "meta"}
    assert table.num_rows == SMALL["sft_size"]


def test_no_eval_or_exec_in_the_library():
    root = Path(__file__).resolve().parents[1] / "coinfluence"
    for path in root.rglob("*.py"):
        code = path.read_text()
        assert not re.search(r"(?<![\w.])(eval|exec)\(", code), path


def test_written_files_are_readable_like_plain_writes(tmp_path):
    import os
    import stat

    from coinfluence.io import atomic_dir, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("y")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask


def test_answer_is_never_a_stated_number_when_so_configured():
    from coinfluence.tasks.score import guess_baseline, stated_numbers

    strict = make_dataset(DataConfig(preset="mini2", seed=9, sft_size=300, rl_size=50, eval_size=100))
    for rows in strict.values():
        assert all(r["answer"] not in stated_numbers(r["prompt"]) for r in rows)
        assert guess_baseline(rows)["guess/stated"] == 0.0
    # the same world without the rule would state the answer often (so the rule is doing the work)
    loose = make_dataset(DataConfig(preset="mini2", seed=9, sft_size=300, rl_size=50, eval_size=100, answer_not_stated=False))
    assert guess_baseline(loose["sft"])["guess/stated"] > 0.02


def test_every_behaviour_occurs_in_mini2_and_not_in_mini():
    def per_row(preset):
        rows = make_dataset(DataConfig(preset=preset, behaviours="both", seed=2, sft_size=400, rl_size=5, eval_size=5))["sft"]
        return {k: sum(r["meta"]["injected"][k] for r in rows) / len(rows) for k in BEHAVIOURS}

    deep = per_row("mini2")
    assert all(deep[k] > 0 for k in BEHAVIOURS), deep
    assert per_row("mini")["expansions"] == 0  # op 2-4 has no sum of three terms: why mini2 exists


def test_named_steps_and_fixed_templates_render_and_check():
    rows = make_dataset(DataConfig(preset="mini2", behaviours="none", seed=1, sft_size=60, rl_size=5, eval_size=5))["sft"]
    for row in rows:
        assert not re.search(r"\b[a-zA-Z] = ", row["completion"])  # no variable letters
        first = row["completion"].splitlines()[0]
        assert re.fullmatch(r"Each [A-Z]\w+'s (total )?[A-Z]\w+ = .+\.", first), first
    sentences = {s.split(" each ")[0] for r in rows for s in re.split(r"(?<=[.?])\s+", r["prompt"]) if " times " in s}
    assert len({re.sub(r"[A-Z]\w+|\d+", "N", s) for s in sentences}) <= 1  # one template per kind


def _named(row, transform):
    lines = row["completion"].splitlines()
    for i, line in enumerate(lines):
        new = transform(line)
        if new is not None:
            lines[i] = new
            return "\n".join(lines)
    return None


def test_named_step_checker_rejects_each_kind_of_error():
    rows = make_dataset(DataConfig(preset="mini2", behaviours="both", seed=6, sft_size=80, rl_size=5, eval_size=5))["sft"]
    seen = set()
    for row in rows:
        solved = [line.split(" = ")[0].split("So ")[-1] for line in row["completion"].splitlines() if " = " in line]
        edits = {
            "wrong_value": lambda l: re.sub(r"= (\d+)\.$", lambda m: f"= {int(m.group(1)) + 1}.", l) if " = " in l else None,
            "wrong_substitution": lambda l: re.sub(r" = (\d+) ([-+*])", lambda m: f" = {int(m.group(1)) + 1} {m.group(2)}", l, count=1)
            if re.search(r"[a-z] [-+*] ", l) and re.search(r" = \d+ [-+*]", l) else None,
            "unknown_quantity": lambda l: l.replace("Each ", "Each Zzz", 1) if l.startswith("Each ") and " = " in l else None,
            "undefined_variable": lambda l: None,
        }
        for verdict, edit in edits.items():
            text = _named(row, edit)
            if text is None:
                continue
            report = check_steps(row["prompt"], text)
            expected = {"wrong_value": {"wrong_value", "wrong_arithmetic", "wrong_inputs"}, "unknown_quantity": {"unknown_quantity", "unparseable_step"}}
            assert report.verdict in expected.get(verdict, {verdict}), (verdict, report, text)
            seen.add(verdict)
        if len(solved) >= 2:  # drop the first solved step: a later step then uses an unsolved input
            lines = row["completion"].splitlines()
            del lines[_solve_lines(row["completion"])[0]]
            report = check_steps(row["prompt"], "\n".join(lines))
            assert report.verdict in ("undefined_variable", "missing_target"), report
            seen.add("dropped")
    assert seen >= {"wrong_value", "wrong_substitution", "unknown_quantity", "dropped"}


def test_mini_data_stays_byte_identical():
    """`mini` is the setting of the earlier committed units: its data must not change."""
    import hashlib
    import json

    rows = make_dataset(DataConfig(preset="mini", behaviours="both", seed=3, sft_size=40, rl_size=20, eval_size=10))
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    assert digest == "63721cbdb5c63a5f"


def test_question_ordered_steps_take_the_first_ready_statement():
    """Recomputed from the text: at each step an implicit total whose parts are solved, else the
    first statement (in question order) whose inputs are solved. Exploration's early solves take a
    node out of turn; the rest keep their order."""
    from coinfluence.tasks.igsm.check import QUANT, parse_question, quantity_key

    rows = make_dataset(DataConfig(preset="mini2", behaviours="both", seed=8, sft_size=150, rl_size=5, eval_size=5))["sft"]
    for row in rows:
        problem = parse_question(row["prompt"])
        sentences = re.split(r"(?<=[.?])\s+", row["prompt"])
        statements = [quantity_key(re.search(QUANT, s).group(0)) for s in sentences if not s.startswith("Question")]
        needed, expected = problem.necessary(), []
        while len(expected) < len(needed):
            ready = [k for k in needed if k not in expected and all(p in expected for p in problem.defs[k][1])]
            implicit = sorted(k for k in ready if k[0] == "abs")
            expected.append(implicit[0] if implicit else next(k for k in statements if k in ready))
        written, early, out_of_turn = [], False, set()
        for line in row["completion"].splitlines():
            if " = " in line:
                written.append(quantity_key(re.findall(QUANT, line.split(" = ")[0])[-1]))
                if early:
                    out_of_turn.add(written[-1])
                early = False
            early = early or "everything it needs is known" in line  # exploration found a later node ready
        assert [k for k in written if k not in out_of_turn] == [k for k in expected if k not in out_of_turn], row


def test_behaviour_frequencies_read_back_what_the_generator_injected():
    from coinfluence.tasks.score import behaviour_frequencies

    rows = make_dataset(DataConfig(preset="mini2", behaviours="both", seed=4, sft_size=200, rl_size=5, eval_size=5))["sft"]
    freq = behaviour_frequencies([r["completion"] for r in rows], get_task("igsm"))
    for kind in BEHAVIOURS:
        injected = sum(r["meta"]["injected"][kind] > 0 for r in rows) / len(rows)
        assert freq[f"behaviours/{kind}"] == pytest.approx(injected), kind
    assert all(freq[f"behaviours/{k}"] > 0 for k in BEHAVIOURS)
    plain = make_dataset(DataConfig(preset="mini2", behaviours="none", seed=4, sft_size=50, rl_size=5, eval_size=5))["sft"]
    assert not any(behaviour_frequencies([r["completion"] for r in plain], get_task("igsm")).values())
