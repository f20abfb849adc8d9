"""The figure scripts' own arithmetic (figures/*.py are scripts, loaded here by path)."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def load(name):
    spec = importlib.util.spec_from_file_location(name, FIGURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_curve_ends_are_steps_1_to_10_and_the_last_10():
    summarize = load("summarize")
    # step 0 holds only the starting validation accuracy; steps 1..30 have reward = step
    rows = [{"step": 0, "val_id_accuracy": 0.5}] + [{"step": s, "reward": float(s)} for s in range(1, 31)]
    first, last = summarize.curve_ends(pd.DataFrame(rows), "reward", window=10)
    assert first == pytest.approx(5.5)  # mean of 1..10, not of 1..9 (which the step-0 row would give)
    assert last == pytest.approx(25.5)


def test_curve_windows_end_at_each_step():
    summarize = load("summarize")
    rows = [{"step": 0, "val_id_accuracy": 0.5}] + [{"step": s, "reward": float(s)} for s in range(1, 61)]
    windows = summarize.curve_windows(pd.DataFrame(rows), "reward", ends=(10, 50, 100), window=10)
    assert windows[10] == pytest.approx(5.5) and windows[50] == pytest.approx(45.5)
    assert windows["last"] == pytest.approx(55.5) and pd.isna(windows[100])  # no steps 91-100 logged
    assert all(pd.isna(v) for v in summarize.curve_windows(pd.DataFrame(rows), "behaviours/frac").values())


def test_make_figures_rl_draws_that_settings_units_into_their_own_dir_and_runs_none(tmp_path, monkeypatch):
    import shutil
    import sys

    make_figures = load("make_figures")
    results = tmp_path / "results-rl-progress"
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "plots" / "bridge-s0", results / "bridge-s0")
    monkeypatch.setattr(make_figures, "rl_roots", lambda name: (tmp_path / "runs", tmp_path / f"results-rl-{name}"))
    monkeypatch.setattr(make_figures, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(make_figures, "run_unit", lambda *a, **k: pytest.fail("ran a unit"))
    monkeypatch.setattr(sys, "argv", ["make_figures.py", "--rl", "progress"])
    make_figures.main()
    drawn = sorted(p.name for p in (tmp_path / "figures" / "rl-progress").iterdir())
    assert "reward_curves.png" in drawn and not (tmp_path / "figures" / "reward_curves.png").exists()


def test_step_verified_by_unit_reads_each_units_checkpoints_in_percent(tmp_path):
    import json
    import shutil

    summarize = load("summarize")
    unit = tmp_path / "bridge-s0"
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "plots" / "bridge-s0", unit)
    saved = json.loads((unit / "eval.json").read_text())
    values = {"sft": 0.20, "grpo/final": 0.33, "grpo/step-000400": 0.31, "sft@n8-t1": 0.10, "grpo/final@n8-t1": 0.18}
    for ckpt, value in values.items():
        saved["checkpoints"].setdefault(ckpt, {})["test_id"] = {"accuracy": 0.5, "step_accuracy": value, "num_rows": 500}
    (unit / "eval.json").write_text(json.dumps(saved))
    row = summarize.step_verified_by_unit([unit]).loc["bridge-s0"]
    assert row["greedy sft"] == pytest.approx(20.0) and row["greedy rft"] == pytest.approx(33.0)
    assert row["greedy gain"] == pytest.approx(13.0) and row["greedy gain@400"] == pytest.approx(11.0)
    assert row["mean@8 gain"] == pytest.approx(8.0)


def test_difficulty_by_unit_gives_each_units_own_depths_in_percent(tmp_path):
    import json
    import shutil

    summarize = load("summarize")
    units = []
    for name, (sft, rft) in {"bridge-s0": (0.25, 0.5), "bridge-s1": (0.1, 0.05)}.items():
        unit = tmp_path / name
        shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "plots" / "bridge-s0", unit)
        saved = json.loads((unit / "eval.json").read_text())
        for ckpt, value in (("sft", sft), ("grpo/final", rft)):
            saved["checkpoints"].setdefault(ckpt, {})["test_id"] = {
                "accuracy": 0.5, "step_accuracy": value, "num_rows": 500, "steps/3/step_accuracy": value,
                "steps/3/num_rows": 120, "steps/4/step_accuracy": value / 2, "steps/4/num_rows": 140}
        (unit / "eval.json").write_text(json.dumps(saved))
        units.append(unit)
    table = summarize.difficulty_by_unit(units).set_index(["unit", "steps"])
    assert table.loc[("bridge-s0", 3), ["rows", "sft", "rft", "gain"]].tolist() == pytest.approx([120, 25.0, 50.0, 25.0])
    assert table.loc[("bridge-s1", 4), ["rows", "sft", "rft", "gain"]].tolist() == pytest.approx([140, 5.0, 2.5, -2.5])
    assert len(table) == 4


def test_validation_by_step_and_rl_course_read_the_grpo_log_and_unit_json(tmp_path, monkeypatch):
    import json

    summarize = load("summarize")
    monkeypatch.setattr(summarize, "STUDY", tmp_path / "study")
    unit, bare, anew, own = (tmp_path / name for name in ("bridge-s1", "bridge-s0", "explore-s3", "vanilla-s1"))
    for u in (unit, bare, anew, own):
        u.mkdir()
    tests = [{"stage": "grpo", "step": s, "val_id_accuracy": a, "val_id_step_accuracy": v}
             for s, a, v in ((0, 0.445, 0.135), (50, 0.4, 0.09), (100, 0.4, 0.125), (400, 0.41, 0.16), (450, 0.42, 0.15))]
    trained = [{"stage": "grpo", "step": s, "reward": 0.3} for s in (1, 2, 51)]  # untested steps: no column
    sft = [{"stage": "sft", "step": 10, "val_accuracy": 0.9, "val_step_accuracy": 0.8}]  # not RL's validation
    (unit / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft + trained + tests))
    last_row = {"step": [3538, 3538], "loss": [0.11, 0.09], "val_accuracy": [0.445, 0.455], "val_step_accuracy": [0.135, 0.14]}
    (unit / "unit.json").write_text(json.dumps({"sft_from": "runs/figures/bridge-s1/sft", "sft_repeats_study_unit": {
        "rows": 354, "identical": False, "first_difference": None, "last_row": last_row}}))
    for u in (bare, anew):
        (u / "unit.json").write_text(json.dumps({"sft_from": f"runs/figures/{u.name}/sft"}))
    (tmp_path / "study" / "bridge-s0").mkdir(parents=True)
    (tmp_path / "study" / "bridge-s0" / "unit.json").write_text("{}")  # the study ran bridge-s0, not explore-s3

    logs = {u.name: summarize.read_metrics(u, "grpo") for u in (unit, bare, anew, own)}
    validation = summarize.validation_by_step(logs)
    assert list(validation.index) == ["bridge-s1"] and list(validation.columns) == [0, 50, 100, 400, 450]
    assert validation.loc["bridge-s1"].tolist() == pytest.approx([13.5, 9.0, 12.5, 16.0, 15.0])
    numbers = pd.DataFrame({"unit": [u.name for u in (unit, bare, anew, own)], "greedy/test_id/accuracy/sft": [0.5, 0.4, 0.3, 0.2],
                            "greedy/test_id/accuracy/rft": [0.46, 0.4, 0.35, 0.2]})
    rows = summarize.rl_course_markdown([unit, bare, anew, own], logs, numbers).split("\n")
    assert rows[2] == "| bridge-s1 | rebuilt | 44.5 / 13.5 | 45.5 / 14.0 | 9.0–16.0 | 16.0 | 15.0 | 50.0 → 46.0 (−4.0) |"
    assert rows[3] == "| bridge-s0 | the study's | — | — | — | — | — | 40.0 → 40.0 (+0.0) |"
    assert rows[4].startswith("| explore-s3 | built anew |") and rows[5].startswith("| vanilla-s1 | its own |")


def test_summarize_can_leave_out_a_seed(tmp_path, bridge_seeds):
    summarize = load("summarize")
    bridge_seeds(0, 1)
    (tmp_path / "notes").mkdir()  # not a unit
    assert [p.name for p in summarize.units_of(tmp_path)] == ["bridge-s0", "bridge-s1"]
    assert [p.name for p in summarize.units_of(tmp_path, drop_seeds=(0,))] == ["bridge-s1"]


def markdown_tables(text: str) -> list[list[str]]:
    """The Markdown tables of a text, each as its lines (separator line left out)."""
    tables, table = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table += [] if set(line) <= set("|-: ") else [line.rstrip()]
        elif table:
            tables, table = [*tables, table], []
    return tables


def test_sft_origin_is_what_the_unit_records_where_it_records_one(tmp_path, monkeypatch):
    """A unit built anew stays "built anew" if the study later runs that seed; a unit trained from
    the study's own SFT run is "the study's" although it records how that log compares."""
    summarize = load("summarize")
    monkeypatch.setattr(summarize, "STUDY", tmp_path)
    (tmp_path / "vanilla-s5").mkdir()
    (tmp_path / "vanilla-s5" / "unit.json").write_text("{}")
    sft = {"sft_from": "runs/figures/vanilla-s5/sft"}
    assert summarize.sft_origin("vanilla-s5", {**sft, "sft_origin": "built anew"}) == "built anew"
    compared = {"sft_repeats_study_unit": {"rows": 3, "identical": True}}
    assert summarize.sft_origin("vanilla-s5", {**sft, **compared, "sft_origin": "the study's"}) == "the study's"
    assert summarize.sft_origin("vanilla-s5", {**sft, **compared}) == "rebuilt"  # units that record no origin
    assert summarize.sft_origin("vanilla-s5", sft) == "the study's"


def test_markdown_tables_are_read_without_separators():
    text = "a\n| x | y |\n|---|---:|\n| 1 | 2 |\n\n| z |\n| --- |\n| 3 |\ntext"
    assert markdown_tables(text) == [["| x | y |", "| 1 | 2 |"], ["| z |", "| 3 |"]]


def test_figures_readme_tables_are_what_summarize_prints_for_the_committed_units(capsys):
    """Every table in figures/README.md with a header summarize prints is pasted from it: a row
    that no committed results directory gives again is a stale or mistyped number."""
    summarize = load("summarize")
    printed = []
    for results in sorted(FIGURES.glob("results*/")):
        summarize.main(results)
        printed += markdown_tables(capsys.readouterr().out)
    headers, rows = {t[0] for t in printed}, {row for t in printed for row in t[1:]}
    checked = [t for t in markdown_tables((FIGURES / "README.md").read_text()) if t[0] in headers]
    assert len(checked) >= 9, "figures/README.md no longer shows summarize's tables under the headers it prints"
    assert [row for t in checked for row in t[1:] if row not in rows] == []


def test_add_difficulty_adds_only_the_missing_numbers_from_a_units_own_samples(tmp_path):
    import json

    from coinfluence.tasks.data import DataConfig, make_dataset
    from coinfluence.tasks.registry import get_task

    add = load("add_difficulty")
    rows = make_dataset(DataConfig(preset="mini2", behaviours="none", seed=1, sft_size=4, rl_size=4, eval_size=6))["test_id"]
    run, results = tmp_path / "run", tmp_path / "results"
    (run / "data").mkdir(parents=True)
    (run / "eval").mkdir()
    results.mkdir()
    (run / "data" / "data_config.json").write_text(json.dumps({"data": {"task": "igsm"}}))
    right = [i % 2 == 0 for i in range(len(rows))]  # greedy: every other row step-verified
    records = [{"split": "test_id", "prompt": r["prompt"], "reward": float(ok), "verdict": "correct" if ok else "wrong_inputs"}
               for r, ok in zip(rows, right)]
    (run / "eval" / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    saved = {"checkpoints": {"sft": {"test_id": {"accuracy": 0.5, "num_rows": len(rows), "n": 1, "steps/3/accuracy": -1.0}}}}
    for path in (run, results):
        (path / "eval.json").write_text(json.dumps(saved))

    found = add.difficulty_of_run(run)
    steps = [get_task("igsm").needed_steps(r["prompt"]) for r in rows]
    for k in set(steps):
        ours = [ok for ok, s in zip(right, steps) if s == k]
        assert found["sft"]["test_id"][f"steps/{k}/step_accuracy"] == pytest.approx(sum(ours) / len(ours))
    for path in (run, results):
        assert add.add_missing(path / "eval.json", found) == 3 * len(set(steps)) - (3 in steps)
        numbers = json.loads((path / "eval.json").read_text())["checkpoints"]["sft"]["test_id"]
        assert numbers["steps/3/accuracy"] == -1.0 and numbers["accuracy"] == 0.5  # what was there stays
        assert add.add_missing(path / "eval.json", found) == 0

    (run / "eval" / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:-1]))
    with pytest.raises(SystemExit, match="samples"):
        add.difficulty_of_run(run)


def test_run_lanes_queues_the_missing_units_seed_by_seed(tmp_path):
    run_lanes = load("run_lanes")
    (tmp_path / "question-aug-s0").mkdir()  # results exist: skipped
    assert run_lanes.pending_units(["question-aug", "answer-aug"], [0, 1], tmp_path) == [
        ("answer-aug", 0), ("question-aug", 1), ("answer-aug", 1)]


def test_run_lanes_runs_every_unit_at_most_lanes_at_once_and_reports_failures(tmp_path):
    import sys

    run_lanes = load("run_lanes")
    marks = tmp_path / "marks"
    marks.mkdir()
    # a stand-in unit: records when it ran, sleeps, and fails for seed 3
    script = ("import sys, time; from pathlib import Path; d = Path(sys.argv[1]); s = time.time(); time.sleep(0.4); "
              "(d / sys.argv[2]).write_text(f'{s} {time.time()}'); print('ran', sys.argv[2]); sys.exit(3 if sys.argv[2].endswith('3') else 0)")
    command = lambda v, s: [sys.executable, "-c", script, str(marks), f"{v}-s{s}"]  # noqa: E731
    units = [("vanilla", s) for s in range(4)]
    status = run_lanes.run_lanes(units, 2, command, tmp_path / "lanes")
    assert status == {"vanilla-s0": 0, "vanilla-s1": 0, "vanilla-s2": 0, "vanilla-s3": 3}
    spans = [tuple(map(float, (marks / f"vanilla-s{s}").read_text().split())) for s in range(4)]
    at_once = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert at_once == 2  # two lanes: a unit starts while another runs, never a third
    run_lanes.run_lanes(units[:1], 1, command, tmp_path / "lanes")  # a rerun appends to the unit's log
    log = (tmp_path / "lanes" / "vanilla-s0.log").read_text()
    assert log.count("ran vanilla-s0") == 2 and log.count("# ") == 2


def test_run_lanes_refuses_an_unknown_variant_before_running_anything(tmp_path, monkeypatch, capsys):
    import sys

    run_lanes = load("run_lanes")
    monkeypatch.setattr(run_lanes, "run_lanes", lambda *a, **k: pytest.fail("ran a unit"))
    monkeypatch.setattr(sys, "argv", ["run_lanes.py", "--variants", "vanila"])
    with pytest.raises(SystemExit) as exit_:
        run_lanes.main()
    assert exit_.value.code == 2 and "unknown variant 'vanila'" in capsys.readouterr().err
    monkeypatch.setattr(run_lanes, "rl_roots", lambda name: (tmp_path / "runs", tmp_path / "results"))
    monkeypatch.setattr(sys, "argv", ["run_lanes.py", "--variants", "answer-aug", "--seeds", "1", "--rl", "progress", "--dry-run",
                                      "--lanes", "1"])
    run_lanes.main()
    assert "1 unit(s) to run in 1 lane(s): answer-aug-s1" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_run_lanes_status_reads_each_units_step_and_pace(tmp_path):
    import json

    run_lanes = load("run_lanes")
    runs, results, sft_root = tmp_path / "runs-rl", tmp_path / "results", tmp_path / "runs"
    (results / "vanilla-s0").mkdir(parents=True)

    def log(run, stage, total, steps_and_times):
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps({stage: {"max_steps": total}}))
        rows = [{"stage": stage, "step": s, "time": t} for s, t in steps_and_times]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "gr')  # a torn last line

    # 12 s a step, with the hour of a kill and resume between steps 30 and 40: the median ignores it
    log(runs / "vanilla-s1", "grpo", 800, [(s, 12.0 * s + (3600 if s >= 40 else 0)) for s in range(10, 81, 10)])
    log(sft_root / "vanilla-s2", "sft", 1000, [(s, 0.5 * s) for s in (100, 200)])  # still building its SFT model
    log(sft_root / "vanilla-s3", "grpo", 120, [(120, 1.0)])  # the study unit's own GRPO: not this setting's
    status = [run_lanes.unit_status("vanilla", s, runs, results, sft_root) for s in range(4)]
    assert status == ["vanilla-s0: landed",
                      "vanilla-s1: stopped at GRPO step 80/800, 12.0 s a step lately, about 2 h 24 min of GRPO to go",
                      "vanilla-s2: stopped at SFT step 200/1000, 0.5 s a step lately, about 0 h 07 min of SFT to go",
                      "vanilla-s3: not started"]
    run_unit = load("run_unit")
    with run_unit.unit_lock(runs / "vanilla-s1"), run_unit.unit_lock(runs / "vanilla-s3"):  # held by a lane
        assert run_lanes.unit_status("vanilla", 1, runs, results, sft_root).startswith("vanilla-s1: running at GRPO step 80/800")
        assert run_lanes.unit_status("vanilla", 3, runs, results, sft_root) == "vanilla-s3: running, no training step logged yet"
    assert run_lanes.unit_status("vanilla", 1, runs, results, sft_root).startswith("vanilla-s1: stopped")
    assert run_lanes.hours_minutes(119.7 * 60) == "2 h 00 min" and run_lanes.hours_minutes(float("nan")) == "an unknown time"
