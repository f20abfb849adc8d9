"""The units task: its generator (answers, depths, pairing, splits), its step checker (gold
passes, each corrupted step fails with its verdict) and its behaviours."""

import random
from collections import Counter

import pytest

from coinfluence.errors import UserError
from coinfluence.tasks.data import DataConfig, make_dataset
from coinfluence.tasks.registry import get_task
from coinfluence.tasks.units import PRESETS as UNIT_PRESETS
from coinfluence.tasks.units.check import BEHAVIOURS as UNIT_BEHAVIOURS, check_steps, count_behaviours, parse_question
from coinfluence.tasks.units.text import render_question, statement_order
from coinfluence.tasks.units.world import build_problem


def units_rows(behaviours="both", seed=3, preset="mini", **sizes):
    cfg = dict(sft_size=120, rl_size=10, eval_size=20) | sizes
    return make_dataset(DataConfig(task="units", preset=preset, behaviours=behaviours, seed=seed, **cfg))


@pytest.mark.parametrize("preset", sorted(UNIT_PRESETS))
def test_units_question_read_back_gives_the_generated_answer(preset):
    cfg = UNIT_PRESETS[preset]
    for i in range(150):
        rng = random.Random(f"units:{i}")
        depth = rng.randint(cfg.depth_id[0], cfg.depth_ood[1])
        problem = build_problem(rng, cfg, depth)
        facts = parse_question(render_question(problem, statement_order(problem, rng)))
        assert facts.values[facts.target] == problem.answer
        assert all(c.value <= cfg.max_value for c in problem.containers)
        # the longest chain from the asked container to loose items is the requested depth
        chain = {}
        for k, c in enumerate(problem.containers):
            chain[k] = 0 if c.items is not None else 1 + max(chain[j] for _, j in c.parts)
        assert chain[problem.target] == depth


@pytest.mark.parametrize("behaviours", ["none", "explore", "exploit", "both"])
def test_units_checker_passes_every_generated_completion(behaviours):
    for rows in units_rows(behaviours).values():
        for r in rows:
            report = check_steps(r["prompt"], r["completion"])
            assert report.ok, (report, r["completion"])


def gold_with_two_part_step():
    rows = units_rows("none")["sft"]
    return next(r for r in rows if " + " in r["completion"] and r["meta"]["n_necessary"] >= 3)


def corrupt(completion: str, kind: str) -> str:
    lines = completion.splitlines()
    k = next(i for i, l in enumerate(lines) if " + " in l)
    head, rhs = lines[k].split(" = ", 1)
    symbolic, substituted, *rest = rhs.split(" = ")
    value, item = rest[-1].rstrip(".").split(" ")
    if kind == "wrong_value":  # an innermost container's items
        n = lines[0].split(" = ")[1].split(" ")[0]
        lines[0] = lines[0].replace(f"= {n} ", f"= {int(n) + 1} ")
    elif kind == "wrong_total":
        lines[k] = " = ".join([head, symbolic, substituted, f"{int(value) + 1} {item}."])
    elif kind == "wrong_arithmetic":
        lines[k] = " = ".join([head, symbolic, substituted, "1 + 1", f"{value} {item}."])
    elif kind == "wrong_substitution":
        n, v = substituted.split(" + ")[0].split(" * ")
        lines[k] = lines[k].replace(f"{n} * {v}", f"{n} * {int(v) + 1}", 1)
    elif kind == "wrong_inputs":
        n = symbolic.split(" ")[0]
        lines[k] = lines[k].replace(f"= {n} ", f"= {int(n) + 1} ", 1)
    elif kind == "undefined_variable":
        lines.insert(0, lines.pop(k))  # solved before what it holds
    elif kind == "redefined":
        lines.insert(k + 1, lines[k])
    elif kind == "missing_target":  # the asked container is solved last
        del lines[max(i for i, l in enumerate(lines) if " = " in l)]
    elif kind == "wrong_final_answer":
        lines[-1] = "<answer>-1</answer>"
    elif kind == "unparseable_step":
        lines[k] = lines[k].replace(head, head.replace("A ", "One "))
    return "\n".join(lines)


@pytest.mark.parametrize("kind", ["wrong_value", "wrong_total", "wrong_arithmetic", "wrong_substitution", "wrong_inputs", "undefined_variable",
                                  "redefined", "missing_target", "wrong_final_answer", "unparseable_step"])
def test_units_checker_fails_each_corrupted_step(kind):
    row = gold_with_two_part_step()
    assert check_steps(row["prompt"], row["completion"]).ok
    report = check_steps(row["prompt"], corrupt(row["completion"], kind))
    assert report.verdict == {"wrong_total": "wrong_arithmetic"}.get(kind, kind), (report, corrupt(row["completion"], kind))


def test_units_checker_reads_only_its_own_questions():
    igsm_row = make_dataset(DataConfig(task="igsm", seed=0, sft_size=2, rl_size=1, eval_size=1))["sft"][0]
    assert check_steps(igsm_row["prompt"], igsm_row["completion"]).verdict == "unparseable_question"
    assert get_task("units").reads(gold_with_two_part_step()["prompt"]) and not get_task("units").reads(igsm_row["prompt"])
    assert check_steps("A box holds 3 boxes. Question: how many beads are in a box?", "").verdict == "unparseable_question"


def test_units_behaviours_read_back_as_injected_and_all_occur_in_bridge_data():
    rows = units_rows("both", sft_size=200)["sft"]
    seen = Counter()
    for r in rows:
        counted = count_behaviours(r["completion"])
        assert counted == {k: r["meta"]["injected"][k] for k in UNIT_BEHAVIOURS}
        seen.update(k for k, v in counted.items() if v)
    assert set(seen) == set(UNIT_BEHAVIOURS), seen
    plain = units_rows("none", sft_size=200)["sft"]
    assert not any(any(count_behaviours(r["completion"]).values()) for r in plain)


def test_units_splits_pair_by_behaviour_keep_depths_apart_and_repeat_by_seed():
    bridge, vanilla = units_rows("both"), units_rows("none")
    assert [r["prompt"] for r in bridge["sft"]] == [r["prompt"] for r in vanilla["sft"]]
    assert bridge == units_rows("both")
    lo, hi = UNIT_PRESETS["mini"].depth_ood
    assert all(lo <= r["meta"]["op"] <= hi for s in ("val_ood", "test_ood") for r in bridge[s])
    assert all(r["meta"]["op"] < lo for s in ("sft", "rl_train", "val_id", "test_id") for r in bridge[s])
    keys = [{r["meta"]["dag"] for r in rows} for rows in bridge.values()]
    assert sum(map(len, keys)) == len(set().union(*keys))


def test_units_augmented_sft_copies_differ_in_order_only():
    q = units_rows("none", sft_size=20, question_aug=3)["sft"]
    a = units_rows("none", sft_size=20, answer_aug=3)["sft"]
    assert len(q) > 20 and len(a) > 20
    assert all(check_steps(r["prompt"], r["completion"]).ok for r in q + a)
    assert len({r["prompt"] for r in a}) == 20 < len({r["prompt"] for r in q})


@pytest.mark.parametrize("options, message", [
    (dict(solution_format="names"), "--solution-format is an option of task igsm"),
    (dict(op_id=(2, 3), op_ood=(3, 4)), "depth-id 2-3 and depth-ood 3-4 overlap"),
    (dict(preset="mini2"), "unknown preset 'mini2' of task units"),
    (dict(redundant=(2, 1)), "redundant range 2-1 must be ordered"),
])
def test_units_bad_options_are_one_clear_error(options, message):
    with pytest.raises(UserError, match=message):
        DataConfig(task="units", **options).validate()


def test_rows_task_has_no_generator_and_no_steps():
    with pytest.raises(UserError, match="task rows has no generator"):
        DataConfig(task="rows").validate()
    rows = get_task("rows")
    assert not rows.reads("anything") and rows.count_behaviours("x") == {} and rows.reward == "exact"


def test_the_vocabulary_alone_covers_every_units_text():
    from coinfluence.models.tokenizer import build_tokenizer, unknown_pieces

    tok = build_tokenizer(get_task("units").vocabulary("mini"))
    texts = [t for rows in units_rows("both").values() for r in rows for t in (r["prompt"], r["completion"])]
    assert not [p for t in texts for p in unknown_pieces(tok, t)]


def test_mini_solutions_follow_the_question_line_by_line_and_deep_shuffles_it():
    import re

    def names(text, pattern):
        return re.findall(pattern, text)

    for preset, ordered in (("mini", True), ("deep", False)):
        rows = units_rows("none", preset=preset, sft_size=40)["sft"]
        follows = [names(r["prompt"], r"A (\w+) holds") == names(r["completion"], r"A (\w+) =") for r in rows]
        assert all(follows) if ordered else not all(follows)


def test_progress_reward_on_units_credits_the_steps_right_before_the_first_wrong_one():
    """The units task counts the steps a solution needs, so --reward progress gives partial credit
    (without that count it silently fell back to 0/1)."""
    from coinfluence.tasks.rewards import reward_scores
    from coinfluence.tasks.units.check import needed_steps

    rows = make_dataset(DataConfig(task="units", behaviours="none", seed=2, sft_size=40, rl_size=2, eval_size=2))["sft"]
    credited = 0
    for row in rows:
        lines = row["completion"].splitlines()
        solves = [i for i, line in enumerate(lines) if " = " in line]
        assert needed_steps(row["prompt"]) == len(solves)  # vanilla solutions solve exactly the needed containers
        assert reward_scores("progress", [row["prompt"]], [row["completion"]], [row["answer"]], "units") == [1.0]
        for k, i in enumerate(solves):  # a wrong value at step k+1: k steps before it check out
            broken = list(lines)
            broken[i] = broken[i].replace(" = ", " = 1 + ", 1) if k else "A nothing = 1 beads."
            got = reward_scores("progress", [row["prompt"]], ["\n".join(broken)], [row["answer"]], "units")[0]
            assert got == pytest.approx(0.5 * k / len(solves)), broken[i]
            credited += got > 0
    assert credited > 0
    assert needed_steps("not a question") is None


def test_progress_reward_needs_a_task_that_counts_steps():
    from coinfluence.tasks.rewards import reward_fn

    with pytest.raises(UserError, match="--reward progress needs to know how many steps a solution takes; task rows"):
        reward_fn("progress", "rows")


def test_analyze_refuses_the_progress_reward_for_a_task_without_a_step_count(tmp_path):
    from coinfluence.influence.analyze import AnalyzeOptions, check_analysis_options, resolve_options

    knobs = {**resolve_options(AnalyzeOptions(reward="progress"), tmp_path), "task": "rows"}
    with pytest.raises(UserError, match="--reward progress needs to know how many steps"):
        check_analysis_options(AnalyzeOptions(reward="progress"), knobs)
    check_analysis_options(AnalyzeOptions(reward="progress"), {**knobs, "task": "units"})
