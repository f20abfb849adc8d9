"""Plotting functions, `coinfluence plot` and the figure scripts' helpers, on saved fixtures.

The fixtures under tests/fixtures/plots/ are the small result files of four tiny real runs
(tests/fixtures/make_plot_fixtures.py): vanilla seeds 0 and 1, BRIDGE seed 0, and BRIDGE with
p_exploit 2.5 seed 0. Expected values are recomputed here from those files, never typed in.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from coinfluence.errors import UserError  # noqa: E402
from coinfluence.plots import analysis, gains, report, runs, training  # noqa: E402
from coinfluence.plots.style import new_figure, variant_colors  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "plots"
VANILLA = [FIXTURES / "vanilla-s0", FIXTURES / "vanilla-s1"]
BRIDGE = FIXTURES / "bridge-s0"
BRIDGE_PX = FIXTURES / "bridge-px2.5-s0"
ALL = VANILLA + [BRIDGE, BRIDGE_PX]
PX_LABEL = "BRIDGE (p_exploit=2.5)"


def grpo_rows(run: Path) -> list[dict]:
    return [r for line in (run / "metrics.jsonl").read_text().splitlines() if (r := json.loads(line))["stage"] == "grpo"]


def eval_acc(run: Path, ckpt: str, split: str) -> float:
    return json.loads((run / "eval.json").read_text())["checkpoints"][ckpt][split]["accuracy"]


def train_queries(run: Path, ckpt: str = "sft") -> pd.DataFrame:
    q = pd.read_parquet(run / "analysis" / ckpt / "queries.parquet")
    return q[q["role"] == "train"]


def data_lines(ax) -> list:
    """Lines that carry data (reference lines such as axhline(0) have no label)."""
    return [line for line in ax.lines if not line.get_label().startswith("_")]


def figure_legend_texts(fig: Figure) -> list[str]:
    """Entries of the one legend below a figure's panels."""
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def test_fixtures_are_small_and_complete():
    files = [p for p in FIXTURES.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    for run in ALL:
        for name in ("config.json", "metrics.jsonl", "eval.json", "analysis/timeseries.csv", "analysis/sft/queries.parquet"):
            assert (run / name).is_file(), run / name
    assert not any(p.suffix in (".safetensors", ".pt", ".bin") for p in files)


# ----------------------------------------------------------------------------- reading and labels


def test_run_labels_and_seeds_come_from_the_run_files():
    assert [runs.run_label(r) for r in ALL] == ["vanilla", "vanilla", "BRIDGE", PX_LABEL]
    assert [runs.run_seed(r) for r in ALL] == [0, 1, 0, 0]
    assert list(runs.group_runs([BRIDGE, *VANILLA])) == ["vanilla", "BRIDGE"]  # known variants in a fixed order
    assert runs.analysis_label(BRIDGE / "analysis" / "sft") == "BRIDGE"


@pytest.mark.parametrize("cfg, label", [
    ({"behaviours": "none"}, "vanilla"),
    ({"behaviours": "both"}, "BRIDGE"),
    ({"behaviours": "explore"}, "explore only"),
    ({"behaviours": "exploit", "p_exploit": 0.5}, "exploit only (p_exploit=0.5)"),
    ({"behaviours": "none", "question_aug": 4, "answer_aug": 1}, "question aug."),
    ({"behaviours": "none", "question_aug": 1, "answer_aug": 4}, "answer aug."),
    ({}, "unknown"),
])
def test_variant_label(cfg, label):
    assert runs.variant_label(cfg) == label


def test_variant_label_reads_train_data_config_when_recorded(tmp_path):
    # `train --behaviours X` records the data options in config.json itself (no data dir copied).
    (tmp_path / "config.json").write_text(json.dumps({"train": {"seed": 3, "data_config": {"behaviours": "explore", "seed": 3}}}))
    assert runs.run_label(tmp_path) == "explore only" and runs.run_seed(tmp_path) == 3


def test_a_checkpoint_dir_is_not_a_run_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert not runs.is_run_dir(tmp_path) and runs.is_run_dir(BRIDGE)


def test_rl_gain_is_rft_minus_sft_from_eval_json():
    g = runs.rl_gain(BRIDGE)
    assert set(g) == {"test_id", "test_ood"}
    for split in g:
        assert g[split]["sft"] == eval_acc(BRIDGE, "sft", split)
        assert g[split]["rft"] == eval_acc(BRIDGE, "grpo/final", split)
        assert g[split]["gain"] == pytest.approx(g[split]["rft"] - g[split]["sft"])


# ----------------------------------------------------------------------------- training curves


def test_reward_curves_mean_and_band_over_seeds(tmp_path):
    fig = training.reward_curves(ALL, tmp_path / "curves")
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes] == ["GRPO step"] * 3
    assert [ax.get_ylabel() for ax in axes] == ["mean rollout reward", "greedy accuracy", "greedy accuracy"]
    for ax in axes:
        assert len(ax.lines) == 3  # vanilla, BRIDGE, BRIDGE p_exploit 2.5
        assert len(ax.collections) == 1  # one ±s.d. band: only vanilla has two seeds
    assert figure_legend_texts(fig) == ["vanilla (2 seeds)", "BRIDGE (1 seed)", f"{PX_LABEL} (1 seed)"]
    reward = axes[0].lines[0]
    per_seed = [{r["step"]: r["reward"] for r in grpo_rows(run)} for run in VANILLA]
    steps = sorted(per_seed[0])
    assert list(reward.get_xdata()) == steps
    np.testing.assert_allclose(reward.get_ydata(), [np.mean([s[k] for s in per_seed]) for k in steps])
    val_steps = [r["step"] for r in grpo_rows(BRIDGE) if "val_id_accuracy" in r]
    assert list(axes[1].lines[1].get_xdata()) == val_steps and len(val_steps) >= 2
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "curves.pdf").read_bytes()[:4] == b"%PDF"


def test_reward_window_smooths_the_reward_only():
    fig = training.reward_curves([BRIDGE], window=2)
    rewards = [r["reward"] for r in grpo_rows(BRIDGE)]
    expected = pd.Series(rewards).rolling(2, min_periods=1).mean()
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), expected)
    assert "2-step mean" in fig.axes[0].get_title()


def test_reward_curves_show_the_behaviour_share_where_a_run_logged_it(tmp_path):
    copy = tmp_path / BRIDGE.name
    shutil.copytree(BRIDGE, copy)
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        if r["stage"] == "grpo" and "reward" in r:
            r["behaviours/frac"] = 1 / (1 + r["step"])
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    titles = [ax.get_title() for ax in training.reward_curves([copy, *VANILLA], window=1).axes]
    assert "rollouts with an injected behaviour" in titles
    assert "rollouts with an injected behaviour" not in [ax.get_title() for ax in training.reward_curves(VANILLA).axes]
    panel = training.reward_curves([copy]).axes[titles.index("rollouts with an injected behaviour")]
    logged = [r for r in grpo_rows(copy) if "behaviours/frac" in r]
    np.testing.assert_allclose(panel.lines[0].get_ydata(), [r["behaviours/frac"] for r in logged])


def test_a_panel_fewer_seeds_logged_says_so_and_the_legend_counts_each_variant_once(tmp_path):
    copies = [tmp_path / run.name for run in VANILLA]
    for run, copy in zip(VANILLA, copies):
        shutil.copytree(run, copy)
    rows = [json.loads(line) for line in (copies[0] / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # only the first seed logged the behaviour share
        if r["stage"] == "grpo" and "reward" in r:
            r["behaviours/frac"] = 0.5
    (copies[0] / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = training.reward_curves(copies)
    titles = [ax.get_title() for ax in fig.axes]
    assert "rollouts with an injected behaviour\n(vanilla: 1 of 2 seeds)" in titles
    assert titles[0] == "GRPO reward (training batch)"  # both seeds logged it: no note
    assert figure_legend_texts(fig) == ["vanilla (2 seeds)"]


# ----------------------------------------------------------------------------- analyses


def test_single_analysis_figures_keep_working(tmp_path):
    sft = BRIDGE / "analysis" / "sft"
    q = train_queries(BRIDGE)
    G = int(q["num_generations"].iloc[0])
    fig = analysis.alpha_histogram(sft, tmp_path / "hist.png")
    heights = [b.get_height() for b in fig.axes[0].containers[0]]
    assert heights == list(np.bincount(q["n_correct"], minlength=G + 1))
    assert (tmp_path / "hist.png").exists() and (tmp_path / "hist.pdf").exists()
    fig = analysis.delta_J_by_alpha(sft, tmp_path / "dj.png")
    assert fig.axes[0].get_ylabel() == "ΔJ per unit step" and len(fig.axes[0].collections[0].get_offsets()) == len(q)


def test_alpha_histograms_side_by_side():
    dirs = [r / "analysis" / "sft" for r in VANILLA + [BRIDGE]]
    fig = analysis.alpha_histograms(dirs)
    assert len(fig.axes) == 2
    left, right = fig.axes
    G = int(train_queries(BRIDGE)["num_generations"].iloc[0])
    bars = [c for c in right.containers if isinstance(c, BarContainer)]
    assert len(bars) == 1 and len(bars[0]) == G + 1
    q = train_queries(BRIDGE)
    np.testing.assert_allclose([b.get_height() for b in bars[0]], np.bincount(q["n_correct"], minlength=G + 1) / len(q))
    # vanilla: mean share over its two seeds, with error bars
    shares = [np.bincount(train_queries(r)["n_correct"], minlength=G + 1) / len(train_queries(r)) for r in VANILLA]
    vbars = [c for c in left.containers if isinstance(c, BarContainer)][0]
    np.testing.assert_allclose([b.get_height() for b in vbars], np.mean(shares, axis=0))
    assert any(isinstance(c, ErrorbarContainer) for c in left.containers)
    assert left.get_title().startswith("vanilla\nn=2") and right.get_title().startswith("BRIDGE\nn=1")
    informative = q["alpha"].between(0, 1, inclusive="neither").mean()
    assert f"{informative:.0%} informative" in right.get_title()
    assert "informative 0<α<1" in figure_legend_texts(fig)
    assert left.get_ylabel() == "share of training queries" and left.get_xlabel() == "rollout accuracy α"


def test_influence_by_alpha_means_and_co_influence_bars():
    dirs = [r / "analysis" / "sft" for r in VANILLA + [BRIDGE]]
    fig = analysis.influence_by_alpha(dirs)
    left, right = fig.axes
    assert left.get_xlabel() == "rollout accuracy α of the training query"
    errorbars = [c for c in left.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 2
    q = train_queries(BRIDGE)
    means = q.groupby(q["alpha"].round(6))["delta_J"].mean()
    x, y = errorbars[1].lines[0].get_data()
    np.testing.assert_allclose(y, means.values)
    np.testing.assert_allclose(np.asarray(x) - (x[0] - means.index[0]), means.index)  # shifted by a constant
    assert any("√(α(1−α))" in t for t in figure_legend_texts(fig))
    bars = [c for c in right.containers if isinstance(c, BarContainer)]  # horizontal: one row per variant
    assert len(bars) == 2 and [t.get_text() for t in right.get_yticklabels()] == ["vanilla", "BRIDGE"]
    inf = q[q["alpha"].between(0, 1, inclusive="neither")]
    assert bars[1][0].get_width() == pytest.approx(inf["co_influence"].mean())
    assert "co-influence" in right.get_xlabel()


def test_influence_through_training_from_timeseries(tmp_path):
    fig = analysis.influence_through_training(VANILLA + [BRIDGE / "analysis"], tmp_path / "itt")
    assert len(fig.axes) == 3
    assert [ax.get_ylabel() for ax in fig.axes] == [ylabel for _, _, ylabel in analysis.TIMESERIES]
    ts = [pd.read_csv(r / "analysis" / "timeseries.csv") for r in VANILLA]
    for ax, (column, _, _) in zip(fig.axes, analysis.TIMESERIES):
        assert len(data_lines(ax)) == 2
        x, y = data_lines(ax)[0].get_data()
        assert list(x) == list(ts[0]["step"]) and x[0] == 0
        np.testing.assert_allclose(y, (ts[0][column] + ts[1][column]) / 2)
    assert figure_legend_texts(fig) == ["vanilla (2 seeds)", "BRIDGE (1 seed)"]
    assert (tmp_path / "itt.png").exists()


# ----------------------------------------------------------------------------- RL gains


def test_table1_markdown_and_csv(tmp_path):
    table = gains.table1(ALL, tmp_path / "table1")
    assert list(table["variant"]) == ["vanilla", "BRIDGE", PX_LABEL] and list(table["seeds"]) == [2, 1, 1]
    van = [eval_acc(r, "grpo/final", "test_id") - eval_acc(r, "sft", "test_id") for r in VANILLA]
    assert table.loc[0, "gain_test_id_mean"] == pytest.approx(np.mean(van))
    assert table.loc[0, "gain_test_id_sd"] == pytest.approx(np.std(van, ddof=1))
    assert table.loc[1, "sft_test_ood_mean"] == pytest.approx(eval_acc(BRIDGE, "sft", "test_ood"))
    csv = pd.read_csv(tmp_path / "table1.csv")
    assert list(csv.columns) == list(table.columns) and len(csv) == 3
    md = (tmp_path / "table1.md").read_text().splitlines()
    assert md[0] == "| variant | seeds | ID SFT | ID RFT | ID gain | OOD SFT | OOD RFT | OOD gain |"
    assert md[2].startswith("| vanilla | 2 | ") and f"{100 * eval_acc(BRIDGE, 'sft', 'test_id'):.1f}" in md[3]


def test_rl_gain_ablation_bars():
    fig = gains.rl_gain_ablation(ALL)
    assert len(fig.axes) == 2
    for ax, split in zip(fig.axes, gains.SPLITS):
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        # only the four behaviour settings at default probabilities; the p_exploit=2.5 run is not one
        assert len(bars) == 2
        assert [t.get_text() for t in ax.get_xticklabels()] == ["vanilla", "BRIDGE"]
        gain = 100 * (eval_acc(BRIDGE, "grpo/final", split) - eval_acc(BRIDGE, "sft", split))
        assert bars[1][0].get_height() == pytest.approx(gain)
    assert fig.axes[0].get_ylabel() == "RL gain in answer accuracy\n(RFT − SFT, points)"  # fixtures predate step checks


def test_step_verified_accuracy_is_the_primary_metric_where_every_run_has_it(tmp_path):
    copies = []
    for k, run in enumerate(VANILLA + [BRIDGE]):
        shutil.copytree(run, tmp_path / run.name)
        saved = json.loads((tmp_path / run.name / "eval.json").read_text())
        for ckpt, splits in saved["checkpoints"].items():
            for split, r in splits.items():
                r["step_accuracy"] = r["accuracy"] / (2 + k) + (0.1 if ckpt == "grpo/final" else 0.0)
        (tmp_path / run.name / "eval.json").write_text(json.dumps(saved))
        copies.append(tmp_path / run.name)
    assert gains.primary_metric(copies) == "step_accuracy" and gains.primary_metric(ALL) == "accuracy"
    table = gains.table1(copies, tmp_path / "t1").set_index("variant")
    step = lambda run, ckpt, split: json.loads((run / "eval.json").read_text())["checkpoints"][ckpt][split]["step_accuracy"]  # noqa: E731
    assert table.at["BRIDGE", "gain_test_id_mean"] == pytest.approx(
        step(copies[2], "grpo/final", "test_id") - step(copies[2], "sft", "test_id"))
    assert "step-verified" in (tmp_path / "t1.md").read_text()
    assert "step-verified" in gains.rl_gain_ablation(copies).axes[0].get_ylabel()


def test_rl_start_end_places_each_tested_checkpoint_at_its_grpo_step(tmp_path):
    copies = []
    for k, run in enumerate(VANILLA):
        copy = tmp_path / run.name
        shutil.copytree(run, copy)
        saved = json.loads((copy / "eval.json").read_text())
        checkpoints = saved["checkpoints"]
        sampled = {"n": 8, "temperature": 1.0, "pass@8": 0.7, "step_pass@8": 0.6}
        checkpoints["sft@n8-t1"] = {"test_id": {**checkpoints["sft"]["test_id"], **sampled}}
        if k == 0:  # only the first seed tested a midway checkpoint
            checkpoints["grpo/step-000002"] = {"test_id": {**checkpoints["sft"]["test_id"], "accuracy": 0.9}}
        (copy / "eval.json").write_text(json.dumps(saved))
        copies.append(copy)
    final = max(r["step"] for r in grpo_rows(VANILLA[0]))  # the fixtures' configs do not record max_steps
    data = gains.accuracy_through_rl(copies, metric="accuracy")
    first = data[(data["run"] == str(copies[0])) & (data["sampling"] == "greedy")].set_index("step")["value"]
    assert list(first.index.sort_values()) == [0, 2, final]
    assert first[2] == pytest.approx(0.9) and first[final] == pytest.approx(eval_acc(VANILLA[0], "grpo/final", "test_id"))
    assert set(data["sampling"]) == {"greedy", "mean@8", "pass@8"}
    assert set(data.loc[data["sampling"] == "pass@8", "value"]) == {0.7}  # pass@8 by the answer
    fig = gains.rl_start_end(copies)
    greedy, sampled, passed = fig.axes[:3]
    assert "pass@8" in passed.get_title()
    mean_line = [line for line in data_lines(greedy) if line.get_linewidth() > 2][0]
    assert list(mean_line.get_xdata()) == [0, final]  # step 2 has one seed of two: no mean there
    expected = 50 * sum(eval_acc(run, "grpo/final", "test_id") for run in VANILLA)
    assert mean_line.get_ydata()[-1] == pytest.approx(expected)
    assert "mean@8" in sampled.get_title() and figure_legend_texts(fig) == ["vanilla (2 seeds)"]


def test_accuracy_by_difficulty_reads_each_step_count_of_the_sft_and_rl_tests(tmp_path):
    copies = []
    for k, run in enumerate([*VANILLA, BRIDGE]):
        copy = tmp_path / run.name
        shutil.copytree(run, copy)
        saved = json.loads((copy / "eval.json").read_text())
        for ckpt, level in (("sft", 0.5), ("grpo/final", 0.6 + 0.1 * k)):
            saved["checkpoints"][ckpt]["test_id"] |= {"steps/3/num_rows": 7, "steps/3/step_accuracy": level,
                                                      "steps/4/num_rows": 5, "steps/4/step_accuracy": level / 2,
                                                      "steps/3/accuracy": level, "steps/4/accuracy": level}
        if k == 0:  # a sampled test has its own numbers by difficulty: not greedy, not read
            saved["checkpoints"]["grpo/final@n8-t1"] = {"test_id": {"n": 8, "temperature": 1.0, "steps/3/step_accuracy": 0.0}}
        (copy / "eval.json").write_text(json.dumps(saved))
        copies.append(copy)
    table = gains.by_difficulty(copies + [VANILLA[0]])  # the fixture itself has no numbers by difficulty
    assert len(table) == 6 and set(table["steps"]) == {3, 4}
    first = table[table["run"] == str(copies[0])].set_index("steps")
    assert first.at[3, "gain"] == pytest.approx(0.1) and first.at[4, "gain"] == pytest.approx(0.05) and first.at[4, "rows"] == 5
    fig = gains.accuracy_by_difficulty(copies, metric="step_accuracy")  # the fixtures' primary metric is the answer's
    mean_gains = sorted(tuple(round(y, 6) for y in line.get_ydata()) for line in fig.axes[1].lines if line.get_linewidth() >= 2)
    assert mean_gains == [(15.0, 7.5), (30.0, 15.0)]  # the mean of vanilla's two runs, BRIDGE's one
    assert figure_legend_texts(fig) == ["vanilla (2 runs)", "BRIDGE (1 run)"]
    assert "accuracy_by_difficulty" in report.plan(copies) and "accuracy_by_difficulty" not in report.plan(ALL)


def test_rl_gain_sweep_over_p_exploit():
    points = gains.sweep_points(ALL, "p_exploit")
    assert sorted(points["p"].unique()) == [1.0, 2.5]  # 1.0: the default, recorded as unset
    fig = gains.rl_gain_sweep(ALL, "p_exploit")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "restating-probability scale p_exploit"
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    x, y = bars.lines[0].get_data()
    assert list(x) == [1.0, 2.5]
    expected = [100 * (eval_acc(r, "grpo/final", "test_id") - eval_acc(r, "sft", "test_id")) for r in (BRIDGE, BRIDGE_PX)]
    np.testing.assert_allclose(y, expected)
    assert figure_legend_texts(fig) == ["BRIDGE"]


def behaviour_rows() -> list[dict]:
    """Six BRIDGE test rows whose completions explore or restate."""
    from coinfluence.tasks.data import DataConfig, make_dataset

    data = make_dataset(DataConfig(preset="mini", behaviours="both", seed=1, sft_size=4, rl_size=4, eval_size=40))
    rows = [r for r in data["test_id"] if "Recall that" in r["completion"] or "not known yet" in r["completion"]][:6]
    assert len(rows) == 6
    return rows


def sampled_runs(tmp_path) -> list[Path]:
    """Copies of a vanilla and the BRIDGE fixture run whose eval.json gains sampled evaluations
    written by the real ``evaluate_checkpoint``; only the generator is replaced. BRIDGE's SFT
    model: for each query, samples 0-1 are the data's own completion with its behaviours
    (correct), 2-3 a plain wrong one; its RL model: all four plain, half of them right. The
    vanilla ones never use behaviours."""
    from coinfluence.models import build_tokenizer
    from coinfluence.training.evaluate import evaluate_checkpoint

    rows = behaviour_rows()
    plain = "Let a be each thing; then a = 1.\n<answer>{}</answer>"
    tok = build_tokenizer([t for r in rows for t in (r["prompt"], r["completion"], plain.format(r["answer"]), plain.format(-1))])
    by_prompt = {tuple(tok.encode(r["prompt"] + "\n", add_special_tokens=False)): r for r in rows}

    def fake(kinds):
        def generate(model, tokenizer, prompt_ids, *, num_samples, **_):
            out = []
            for ids in prompt_ids:
                row = by_prompt[tuple(ids[1:])]
                texts = {"injected": row["completion"], "right": plain.format(row["answer"]), "wrong": plain.format(-1)}
                out.append([tokenizer.encode(texts[k], add_special_tokens=False) for k in kinds])
            return out
        return generate

    stages = {"BRIDGE": (["injected", "injected", "wrong", "wrong"], ["right", "right", "wrong", "wrong"]),
              "vanilla": (["right", "wrong", "wrong", "wrong"], ["right", "right", "wrong", "wrong"])}
    out = []
    for src, label in ((BRIDGE, "BRIDGE"), (VANILLA[0], "vanilla")):
        run = tmp_path / src.name
        shutil.copytree(src, run)
        for ckpt, kinds in zip(("sft", "grpo/final"), stages[label]):
            evaluate_checkpoint(None, tok, {"test_id": rows}, run, f"{ckpt}@n4-t1", n=4, temperature=1.0, generate_fn=fake(kinds))
        out.append(run)
    return out


def test_behaviour_use_from_sampled_evaluations(tmp_path):
    bridge, vanilla = sampled_runs(tmp_path)
    table = gains.sampled_behaviours([bridge, vanilla, BRIDGE])  # the fixture itself has no sampled eval: left out
    assert sorted(zip(table["variant"], table["stage"])) == [("BRIDGE", "RFT"), ("BRIDGE", "SFT"), ("vanilla", "RFT"), ("vanilla", "SFT")]
    sft = table[(table["variant"] == "BRIDGE") & (table["stage"] == "SFT")].iloc[0]
    assert sft["behaviours/frac"] == 0.5 and sft["paired_queries"] == 6
    assert sft["n"] == 4 and sft["accuracy"] == 0.5 and sft["pass@n"] == 1.0 and sft["injected"]
    assert not table.loc[table["variant"] == "vanilla", "injected"].any()
    assert sft["paired_accuracy_with_behaviours"] == 1.0 and sft["paired_accuracy_without_behaviours"] == 0.0
    # lines of each kind per completion: half of the SFT model's samples are the data's completions
    from coinfluence.tasks.igsm import count_behaviours

    counts = pd.DataFrame([count_behaviours(r["completion"]) for r in behaviour_rows()])
    kinds = [c for c in table.columns if c.startswith("behaviours/") and c != "behaviours/frac"]
    assert kinds == [f"behaviours/{k}" for k in counts.columns] and counts.values.sum() > 0
    np.testing.assert_allclose(sft[kinds].astype(float), counts.mean().values / 2)
    assert (table.loc[table["stage"] == "RFT", kinds] == 0).all().all()
    fig = gains.behaviour_use([bridge, vanilla])
    left, right, kinds_panel = fig.axes  # top, middle and bottom panel
    heights = [b.get_height() for c in left.containers if isinstance(c, BarContainer) for b in c]
    assert heights == [0.0, 0.0, 50.0, 0.0]  # vanilla SFT, RFT; BRIDGE SFT, RFT (in %)
    assert [t.get_text() for t in left.get_xticklabels()] == ["vanilla", "BRIDGE"]
    assert left.get_ylabel() == "share of completions (%)" and "injected behaviours" in left.get_title()
    # right: only BRIDGE was trained on injected data; after RL it uses none, so only its SFT pair has heights
    assert [t.get_text() for t in right.get_xticklabels()] == ["BRIDGE"]
    pairs = [b.get_height() for c in right.containers if isinstance(c, BarContainer) for b in c]
    assert pairs[:2] == [100.0, 0.0] and all(np.isnan(pairs[2:])) and len(pairs) == 4
    # bottom: BRIDGE's lines of each kind, SFT then after RL, per kind
    assert [t.get_text() for t in kinds_panel.get_xticklabels()] == list(counts.columns)
    lines = [b.get_height() for c in kinds_panel.containers if isinstance(c, BarContainer) for b in c]
    np.testing.assert_allclose(lines, [v for mean in counts.mean().values / 2 for v in (mean, 0.0)])
    assert figure_legend_texts(fig) == ["with behaviours", "without", "SFT", "after RL"]
    assert "behaviour_use" in report.plan([bridge, vanilla])


def test_colours_are_fixed_per_variant():
    assert variant_colors(["BRIDGE"])["BRIDGE"] == variant_colors(["vanilla", "BRIDGE"])["BRIDGE"]
    colors = variant_colors(["vanilla", "BRIDGE", "something else"])
    assert len(set(colors.values())) == 3
    # a variant outside the known six keeps its colour whichever others share the figure
    sweep = ["BRIDGE (p_explore=0.1)", "BRIDGE (p_explore=0.6)"]
    alone = variant_colors(sweep[1:])[sweep[1]]
    assert variant_colors(["vanilla", *sweep])[sweep[1]] == alone == variant_colors(list(EIGHT_LABELS))[sweep[1]]
    assert len(set(variant_colors(EIGHT_LABELS).values())) == 8


def cielab(rgb) -> np.ndarray:
    """sRGB (0–1) to CIELAB under D65: distances there follow how different colours look."""
    c = np.asarray(rgb, dtype=float)
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    t = xyz / [0.95047, 1.0, 1.08883]
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_the_six_variants_colours_are_told_apart_at_a_glance():
    """BRIDGE and exploit only once shared the palette's orange and vermillion (26 apart)."""
    colors = variant_colors(EIGHT_LABELS[:6])
    assert set(colors) == set(EIGHT_LABELS[:6])
    gaps = {(a, b): float(np.linalg.norm(cielab(colors[a]) - cielab(colors[b]))) for a, b in itertools.combinations(colors, 2)}
    assert min(gaps.values()) >= 36, min(gaps.items(), key=lambda kv: kv[1])


def test_figures_name_and_colour_variants_alike(eight_variants, tmp_path):
    """The colour of each variant is the same in every figure that draws it."""
    colors = variant_colors(EIGHT_LABELS)
    fig = training.reward_curves(eight_variants)
    for line in data_lines(fig.axes[0]):
        assert matplotlib.colors.same_color(line.get_color(), colors[line.get_label().rsplit(" (", 1)[0]])
    fig = analysis.influence_by_alpha(analyses_of(eight_variants))
    bars = [c for c in fig.axes[1].containers if isinstance(c, BarContainer)]
    names = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert names == list(EIGHT_LABELS)
    for name, bar in zip(names, bars):
        assert matplotlib.colors.same_color(bar[0].get_facecolor(), colors[name])


# ----------------------------------------------------------------------------- draw_all and the CLI


def test_draw_all_plans_what_the_inputs_support(tmp_path):
    assert set(report.plan(ALL)) == {"reward_curves", "table1", "claims", "rl_gain_ablation", "rl_start_end", "rl_gain_sweep_p_exploit",
                                     "alpha_histograms", "influence_by_alpha", "influence_through_training"}
    # an analysis dir alone supports only the analysis figures; an --all-checkpoints dir adds the time series
    assert set(report.plan([BRIDGE / "analysis" / "sft"])) == {"alpha_histograms", "influence_by_alpha"}
    assert set(report.plan([BRIDGE / "analysis"])) == {"alpha_histograms", "influence_by_alpha", "influence_through_training"}
    # the same run given twice (as RUN and RUN/analysis) is drawn once
    _, inputs, _ = report.plan([BRIDGE, BRIDGE / "analysis"])["influence_through_training"]
    assert len(inputs) == 1


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "coinfluence_cli.main", *args], capture_output=True, text=True)


def test_cli_plot_writes_and_lists_the_figures(tmp_path):
    out = tmp_path / "figs"
    r = run_cli("plot", *map(str, ALL), "--out", str(out))
    assert r.returncode == 0, r.stderr
    written = [line.removeprefix("wrote ") for line in r.stdout.splitlines()]
    assert {Path(p).name for p in written} >= {"reward_curves.png", "reward_curves.pdf", "table1.md", "table1.csv",
                                               "alpha_histograms.png", "influence_by_alpha.png",
                                               "influence_through_training.png", "rl_gain_ablation.png",
                                               "rl_gain_sweep_p_exploit.png"}
    assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in written)
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "not found"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "neither a run dir"),
])
def test_cli_plot_bad_input_is_one_line_and_draws_nothing(tmp_path, make, message):
    out = tmp_path / "figs"
    r = run_cli("plot", str(BRIDGE), str(make(tmp_path)), "--out", str(out))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_classify_rejects_a_file(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        report.classify([BRIDGE / "eval.json"])


# ----------------------------------------------------------------------------- figure scripts


def figure_scripts():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "figures"))
    import run_unit

    return run_unit


def test_run_unit_variants():
    ru = figure_scripts()
    assert ru.parse_variant("vanilla") == ("none", [])
    assert ru.parse_variant("bridge") == ("both", [])
    assert ru.parse_variant("question-aug", 3) == ("none", ["--question-aug", "3"])
    assert ru.parse_variant("bridge-pe0.6") == ("both", ["--p-explore", "0.6"])
    with pytest.raises(ValueError, match="unknown variant"):
        ru.parse_variant("bridge-x")


def test_run_unit_step_times_are_saved_while_the_step_runs(tmp_path, monkeypatch):
    """A step killed with its session keeps the seconds it ran: the ledger is written as it runs."""
    ru = figure_scripts()
    monkeypatch.setattr(ru, "HEARTBEAT_S", 0.05)
    ledger = tmp_path / "runs" / "u.seconds.json"
    ledger.parent.mkdir()
    ledger.write_text(json.dumps({"train": 50.0, "data": 3.0}))
    seen = []
    real_write = ru.write_json
    monkeypatch.setattr(ru, "write_json", lambda path, obj: (seen.append(obj["train"]), real_write(path, obj)))
    total = ru.timed_step(["--help"], "train", ledger)
    assert len(seen) >= 3 and seen == sorted(seen) and seen[0] > 50.0  # beats while running, then the total
    assert total == seen[-1] and json.loads(ledger.read_text()) == {"train": total, "data": 3.0}


def test_run_unit_skips_a_unit_whose_results_exist(tmp_path, monkeypatch):
    ru = figure_scripts()
    shutil.copytree(BRIDGE, tmp_path / "results" / "bridge-s0")
    monkeypatch.setattr(ru, "coinfluence", lambda args, heartbeat=None: pytest.fail(f"ran {args}"))
    assert ru.run_unit("bridge", 0, runs_root=tmp_path / "runs", results_root=tmp_path / "results") == tmp_path / "results" / "bridge-s0"


def test_run_unit_runs_only_the_missing_steps_and_keeps_the_record(tmp_path, monkeypatch):
    ru = figure_scripts()
    results, runs = tmp_path / "results", tmp_path / "runs"
    shutil.copytree(BRIDGE, results / "bridge-s0")
    (results / "bridge-s0" / "unit.json").write_text(json.dumps({"seconds": {"train": 12.0}, "finished": "then"}))
    run = runs / "bridge-s0"
    shutil.copytree(BRIDGE, run)
    (run / "grpo" / "final").mkdir(parents=True)
    (run / "grpo" / "final" / "config.json").write_text("{}")  # data and training are done, no test yet
    (run / "grpo" / "final" / "grpo_config.json").write_text(json.dumps({"max_steps": ru.SETTING["grpo_steps"]}))
    (run / "eval.json").write_text(json.dumps({"checkpoints": {}}))
    for name in ("sft", "grpo-final"):
        (run / "analysis" / name).mkdir(parents=True, exist_ok=True)
        (run / "analysis" / name / "summary.json").write_text("{}")
    calls = []
    STEP_TOOK = 2.0  # what the stand-in reports for each step it runs: bookkeeping, not a measured time

    def fake_coinfluence(args, heartbeat=None):
        command = args[args.index("eval")] if "eval" in args else args[0]
        calls.append(command)
        assert command == "eval", f"ran {args}"
        ckpt = str(Path(args[args.index("--ckpt") + 1]).relative_to(run))
        name = ckpt + (ru.SAMPLED_NAME if "--n" in args else "")
        saved = json.loads((run / "eval.json").read_text())
        rows = json.loads((run / "data" / "data_config.json").read_text())["counts"]
        for split in args[args.index("--splits") + 1].split(","):
            saved["checkpoints"].setdefault(name, {})[split] = {"accuracy": 0.5, "num_rows": rows[split]}
        (run / "eval.json").write_text(json.dumps(saved))
        return STEP_TOOK

    monkeypatch.setattr(ru, "coinfluence", fake_coinfluence)
    assert ru.run_unit("bridge", 0, runs_root=runs, results_root=results) == results / "bridge-s0"
    assert calls == []  # without --refresh a finished unit is left alone
    ru.ledger_path(run).write_text(json.dumps({"test sft": 100.0}))  # 100 s of it ran in a session that was killed
    ru.run_unit("bridge", 0, runs_root=runs, results_root=results, refresh=True)
    assert calls == ["eval"] * 4  # full tests of sft and grpo/final, then their sampled tests
    saved = json.loads((results / "bridge-s0" / "eval.json").read_text())["checkpoints"]
    assert {"sft@n8-t1", "grpo/final@n8-t1"} <= set(saved)
    record = json.loads((results / "bridge-s0" / "unit.json").read_text())
    assert set(record["seconds"]) == {"train", "test sft", "test grpo/final", "sampled test sft", "sampled test grpo/final"}
    assert record["seconds"]["train"] == 12.0 and record["finished"] == "then" and "refreshed" in record
    # the ledger adds a step's runs across sessions: 100 before the kill, then one stand-in run
    assert record["seconds"]["test sft"] == 100.0 + STEP_TOOK and record["seconds"]["sampled test sft"] == STEP_TOOK
    assert record["machine"]["threads"] == ru.SETTING["threads"] and record["setting"] == ru.SETTING
    ru.run_unit("bridge", 0, runs_root=runs, results_root=results, refresh=True)
    assert calls == ["eval"] * 4  # nothing left to do


def test_run_unit_takes_another_task_and_keeps_the_studys_commands():
    ru = figure_scripts()
    assert ru.task_setting("igsm") is ru.SETTING and ru.task_roots("igsm") == (ru.RUNS, ru.RESULTS)
    study = dict((n, a) for n, a, _ in ru.unit_steps("bridge", 0, Path("r"), ru.SETTING, 4, {}))
    units = dict((n, a) for n, a, _ in ru.unit_steps("bridge", 0, Path("r"), ru.task_setting("units"), 4, {}))
    assert "--task" not in study["data"] and study["data"][study["data"].index("--preset") + 1] == ru.SETTING["task_preset"]
    assert units["data"][units["data"].index("--task") + 1] == "units"
    assert units["data"][units["data"].index("--preset") + 1] == units["train"][units["train"].index("--task-preset") + 1] == "mini"
    same_but_preset = {k: ["mini" if x == ru.SETTING["task_preset"] else x for x in v] for k, v in study.items() if k != "data"}
    assert {k: v for k, v in units.items() if k != "data"} == same_but_preset
    assert all(root.name.endswith("-units") for root in ru.task_roots("units"))


def test_an_rl_setting_trains_grpo_alone_from_the_units_sft_model_and_tests_it_in_its_own_run():
    ru = figure_scripts()
    sft = Path("runs/figures/bridge-s3/sft")
    study = dict((n, a) for n, a, _ in ru.unit_steps("bridge", 3, Path("r"), ru.SETTING, 4, {}))
    steps = dict((n, a) for n, a, _ in ru.unit_steps("bridge", 3, Path("r"), ru.rl_setting("progress"), 4, {}, sft))
    assert steps["data"] == study["data"]  # the same problems, regenerated from the seed
    train = steps["train"]
    assert train[train.index("--stage") + 1] == "grpo" and train[train.index("--from-sft") + 1] == str(sft)
    assert "--sft-epochs" not in train and "--preset" not in train
    for key, option in (("grpo_steps", "--grpo-steps"), ("prompts_per_step", "--prompts-per-step"), ("reward", "--reward"),
                        ("grpo_eval_steps", "--eval-steps"), ("grpo_save_steps", "--save-steps")):
        assert train[train.index(option) + 1] == str(ru.RL_SETTINGS["progress"][key])
    for name in ("test sft", "sampled test sft", "analyze sft"):
        assert steps[name][steps[name].index("--ckpt") + 1] == str(sft)
    for name in ("test sft", "sampled test sft", "test grpo/final"):
        assert steps[name][steps[name].index("--out") + 1] == "r"  # eval.json of this run, never the study unit's
    assert steps["analyze grpo/final"][steps["analyze grpo/final"].index("--ckpt") + 1] == str(Path("r/grpo/final"))
    assert all("--out" not in study[n] for n in study if n.startswith("test"))  # the study's commands are unchanged


def test_a_finished_rl_run_shorter_than_its_setting_trains_on_and_its_final_is_tested_again(tmp_path, monkeypatch):
    """The progress setting grew from 400 to 800 steps: its 400-step units continue, and no result of the
    400-step grpo/final survives as a result of the 800-step one."""
    ru = figure_scripts()
    setting, sft = ru.rl_setting("progress"), tmp_path / "study" / "bridge-s0" / "sft"
    run = tmp_path / "runs" / "bridge-s0"
    shutil.copytree(BRIDGE / "data", run / "data")
    final = ru.Run(run).grpo_final
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (final / "grpo_config.json").write_text(json.dumps({"max_steps": 400}))
    old = {"accuracy": 0.25, "num_rows": 10**6}
    (run / "eval.json").write_text(json.dumps({"checkpoints": {name: {"test_id": old, "test_ood": old} for name in
                                                               ("sft", "grpo/final", "sft@n8-t1", "grpo/final@n8-t1")}}))
    for name in ("sft", "grpo_final", "grpo_final@n8-t1"):
        (run / "eval").mkdir(exist_ok=True)
        (run / "eval" / f"{name}.jsonl").write_text("{}\n")
    for name in ("sft", "grpo-final"):
        (run / "analysis" / name).mkdir(parents=True)
        (run / "analysis" / name / "summary.json").write_text("{}")
    calls = []

    def fake_coinfluence(args, heartbeat=None):
        if "train" in args:
            calls.append(("train", ru.grpo_steps(args)))
            (final / "grpo_config.json").write_text(json.dumps({"max_steps": ru.grpo_steps(args)}))
            return 1.0
        ckpt = tmp_path / args[args.index("--ckpt") + 1]  # commands run in ROOT, with paths relative to it
        name = "sft" if ckpt == sft else str(ckpt.relative_to(run))
        command = "analyze" if "analyze" in args else "sampled" if "--n" in args else "eval"
        calls.append((command, name))
        if command == "analyze":
            ru.Run(run).analysis_of(name).mkdir(parents=True)
            ru.Run(run).analysis_summary(name).write_text("{}")
            return 1.0
        saved = json.loads((run / "eval.json").read_text())
        for split in args[args.index("--splits") + 1].split(","):
            saved["checkpoints"].setdefault(name + (ru.SAMPLED_NAME if command == "sampled" else ""), {})[split] = {
                "accuracy": 0.5, "num_rows": 10**6}
        (run / "eval.json").write_text(json.dumps(saved))
        return 1.0

    monkeypatch.setattr(ru, "coinfluence", fake_coinfluence)
    monkeypatch.setattr(ru, "ROOT", tmp_path)
    ru.run_unit("bridge", 0, runs_root=tmp_path / "runs", results_root=tmp_path / "results", setting=setting, sft_from=sft)
    assert setting["grpo_steps"] == 800 and setting["test_steps"] == [400]
    assert calls == [("train", 800), ("eval", "grpo/final"), ("eval", "grpo/step-000400"),
                     ("sampled", "grpo/final"), ("analyze", "grpo/final")]  # sft's results still hold
    saved = json.loads((run / "eval.json").read_text())["checkpoints"]
    assert saved["sft"]["test_id"] == old and saved["grpo/final"]["test_id"]["accuracy"] == 0.5
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["sft.jsonl"]  # the 400-step final's rows are gone
    (final / "grpo_config.json").write_text(json.dumps({"max_steps": 1000}))
    with pytest.raises(SystemExit, match="trained for 1000 GRPO steps, more than the setting's 800"):
        ru.run_unit("bridge", 0, runs_root=tmp_path / "runs", results_root=tmp_path / "other", setting=setting, sft_from=sft)


def test_the_sft_steps_of_a_study_unit_are_replayed_from_its_recorded_commands():
    ru = figure_scripts()
    study = ru.unit_steps("bridge", 3, Path("r"), ru.SETTING, 4, {})
    record = {"commands": ["coinfluence " + ru.shlex.join(args) for _, args, _ in study]}
    steps = dict(ru.sft_steps_of(record))
    assert list(steps) == ["data", "sft"]
    assert steps["data"] == dict((n, a) for n, a, _ in study)["data"]
    assert steps["sft"] == [*dict((n, a) for n, a, _ in study)["train"], "--stage", "sft"]


def test_sft_repeats_compares_every_field_but_the_wall_clock_ones(tmp_path):
    ru = figure_scripts()
    rows = [{"stage": "sft", "step": s, "loss": 1.0 / s, "grad_norm": 2.0, "time": 1e9 + s, "tokens_per_second": 10.0}
            | ({"val_accuracy": 0.3} if s == 30 else {}) for s in (10, 20, 30)] + [{"stage": "grpo", "step": 1, "reward": 0.5}]
    theirs, ours = tmp_path / "theirs.jsonl", tmp_path / "ours.jsonl"
    theirs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ours.write_text("".join(json.dumps({**r, "time": 0.0, "tokens_per_second": 99.0}) + "\n" for r in rows[:3]))
    assert ru.sft_repeats(ours, theirs) == {"rows": 3, "identical": True, "first_difference": None,
                                            "last_row": {"step": [30, 30], "loss": [1 / 30, 1 / 30], "val_accuracy": [0.3, 0.3],
                                                         "val_step_accuracy": [None, None]}}
    drifted = [dict(r) for r in rows[:3]]
    drifted[1]["loss"] += 1e-9
    drifted[2]["loss"] = 0.5
    ours.write_text("".join(json.dumps(r) + "\n" for r in drifted))
    assert ru.sft_repeats(ours, theirs) == {"rows": 3, "identical": False, "last_row": {
        "step": [30, 30], "loss": [0.5, 1 / 30], "val_accuracy": [0.3, 0.3], "val_step_accuracy": [None, None]}, "first_difference": {
        "stage": "sft", "step": 20, "key": "loss", "recorded": 0.05, "rerun": 0.05 + 1e-9}}
    ours.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))  # stopped early
    assert ru.sft_repeats(ours, theirs)["identical"] is False
    assert ru.sft_repeats(tmp_path / "missing.jsonl", theirs) == {"rows": 0, "identical": False, "first_difference": None,
                                                                  "last_row": None}


def test_an_rl_unit_whose_study_run_is_gone_rebuilds_the_sft_model_first(tmp_path, monkeypatch):
    """The run dirs of a study unit do not outlive their machine; its results do, with the commands.
    A unit the study never ran gets the SFT model the study's commands would have built."""
    ru = figure_scripts()
    study = tmp_path / "figures" / "results" / "vanilla-s2"
    study.mkdir(parents=True)
    commands = ru.unit_steps("vanilla", 2, Path("runs/figures/vanilla-s2"), ru.SETTING, 4, {})
    (study / "unit.json").write_text(json.dumps({"commands": ["coinfluence " + ru.shlex.join(a) for _, a, _ in commands]}))
    sft_log = {"stage": "sft", "step": 10, "loss": 3.0}
    (study / "metrics.jsonl").write_text(json.dumps(sft_log) + "\n")
    calls = []

    def fake_coinfluence(args, heartbeat=None):
        calls.append(args)
        if args[0] == "data":
            out = tmp_path / args[args.index("--out") + 1]
            out.mkdir(parents=True)
            (out / "data_config.json").write_text("{}")
        elif "--stage" in args and args[args.index("--stage") + 1] == "sft":
            run = ru.Run(tmp_path / args[args.index("--out") + 1])
            run.sft.mkdir(parents=True)
            (run.sft / "config.json").write_text("{}")
            run.metrics.write_text(json.dumps(sft_log) + "\n")
        return 1.0

    seen = {}
    monkeypatch.setattr(ru, "ROOT", tmp_path)
    monkeypatch.setattr(ru, "coinfluence", fake_coinfluence)
    monkeypatch.setattr(ru, "run_unit", lambda *a, **kw: seen.update(kw))
    monkeypatch.setattr(sys, "argv", ["run_unit.py", "vanilla", "2", "--rl", "progress",
                                      "--runs-root", str(tmp_path / "runs" / "figures")])
    monkeypatch.setattr(ru, "task_roots", lambda task: (tmp_path / "runs" / "figures", tmp_path / "figures" / "results"))
    ru.main()
    replayed = dict(ru.sft_steps_of(json.loads((study / "unit.json").read_text())))
    assert calls == [replayed["data"], replayed["sft"]]
    assert seen["sft_from"] == tmp_path / "runs" / "figures" / "vanilla-s2" / "sft"
    assert seen["study_metrics"] == study / "metrics.jsonl"
    assert ru.sft_repeats(ru.Run(seen["sft_from"].parent).metrics, seen["study_metrics"])["identical"]
    rebuilt = {"sft_origin": "rebuilt", "sft_build_seconds": {"data": 1.0, "sft": 1.0}}
    assert seen["origin"] == rebuilt
    ru.main()
    assert len(calls) == 2  # the rebuilt model is used, not rebuilt again
    assert seen["origin"] == rebuilt  # and still known to be a rebuild in a later session
    argv = list(sys.argv)
    monkeypatch.setattr(sys, "argv", argv[:-1] + [str(tmp_path / "elsewhere")])
    with pytest.raises(SystemExit, match="commands write to runs/figures/vanilla-s2, not elsewhere"):
        ru.main()
    assert len(calls) == 2
    (study / "unit.json").unlink()  # a unit the study never ran: built with the study's own commands
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setattr(sys, "argv", argv)
    ru.main()
    assert calls[2:] == [replayed["data"], replayed["sft"]]
    assert seen["origin"]["sft_origin"] == "built anew"
    (tmp_path / "runs" / "figures" / "vanilla-s2.seconds.json").unlink()  # as if the study's own run were still here
    ru.main()
    assert len(calls) == 4 and seen["origin"] == {"sft_origin": "the study's"}


def test_run_unit_refuses_a_unit_another_process_is_running(tmp_path, monkeypatch):
    """Two lanes on one unit would write one run dir at once: the second is refused before any step."""
    ru = figure_scripts()
    ran = []
    monkeypatch.setattr(ru, "ROOT", tmp_path)
    monkeypatch.setattr(ru, "task_roots", lambda task: (tmp_path / "runs" / "figures", tmp_path / "figures" / "results"))
    monkeypatch.setattr(ru, "coinfluence", lambda args, heartbeat=None: pytest.fail(f"ran {args}"))
    monkeypatch.setattr(ru, "run_locked_unit", lambda *args: ran.append(args))
    study_run, rl_run = tmp_path / "runs" / "figures" / "vanilla-s2", tmp_path / "runs" / "figures-rl-progress" / "vanilla-s2"
    for argv, held in ((["vanilla", "2"], study_run), (["vanilla", "2", "--rl", "progress"], rl_run),
                       (["vanilla", "2", "--rl", "progress"], study_run)):  # --rl may rebuild the study unit's SFT
        monkeypatch.setattr(sys, "argv", ["run_unit.py", *argv])
        with ru.unit_lock(held), pytest.raises(SystemExit, match=f"unit vanilla-s2 is already running in another process \\({held}\\)"):
            ru.main()
        assert ran == []
        ru.main()  # the holder has ended
        assert len(ran) == 1
        ran.clear()


def test_a_units_machine_tells_cpu_generations_apart_when_the_name_does_not():
    ru = figure_scripts()
    zen = "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n"
    two_cores = lambda family, model: "\n".join(zen.format(n=n, family=family, model=model) for n in (0, 1))  # noqa: E731
    old, new = ru.cpu_identity(two_cores(23, 49)), ru.cpu_identity(two_cores(26, 2))
    assert old["cpu"] == new["cpu"] == "AMD EPYC"
    assert (old["cpu_family_model"], new["cpu_family_model"]) == ("23/49", "26/2")
    record = ru.machine(1)
    assert record["cpu_capability"] in {"DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256", "NO AVX"} and record["threads"] == 1


def test_augmented_variants_train_the_same_passes_per_problem():
    ru = figure_scripts()
    def epochs(variant):
        steps = ru.unit_steps(variant, 0, Path("r"), ru.SETTING, 4, {})
        train = dict((n, a) for n, a, _ in steps)["train"]
        return float(train[train.index("--sft-epochs") + 1])
    assert epochs("question-aug") == epochs("answer-aug") == epochs("bridge") / 4 == ru.SETTING["sft_epochs"] / 4


def test_augmented_variants_count_the_orders_each_problem_really_has(tmp_path):
    """A problem with fewer distinct orders than K has fewer rows; passes over the rows are set so
    that each problem is still seen sft_epochs times (mini2's answer-aug held 10,033 rows for
    4,000 problems, and sft_epochs / 4 passes showed each problem 7.5 times instead of 12)."""
    ru = figure_scripts()
    data = tmp_path / "data"
    data.mkdir()
    per_problem = [4, 4, 2, 1, 4]  # 15 rows for 5 problems
    rows = [{"id": f"sft-{i:06d}-{j}", "meta": {"index": i}} for i, n in enumerate(per_problem) for j in range(n)]
    (data / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    steps = ru.unit_steps("answer-aug", 0, tmp_path, ru.SETTING, 4, {})
    train = dict((n, a) for n, a, _ in steps)["train"]
    passes = float(train[train.index("--sft-epochs") + 1])
    assert passes * len(rows) / len(per_problem) == pytest.approx(ru.SETTING["sft_epochs"])
    vanilla = dict((n, a) for n, a, _ in ru.unit_steps("vanilla", 0, tmp_path, ru.SETTING, 4, {}))["train"]
    assert float(vanilla[vanilla.index("--sft-epochs") + 1]) == ru.SETTING["sft_epochs"]


# ----------------------------------------------------------------------------- readable layout

# The eight variants of the project's figure units, made from the fixtures by changing only the
# recorded data options, so that the layout is tested with as many (and as long) names as the
# committed figures carry.
EIGHT = {"vanilla": {"behaviours": "none"}, "bridge": {"behaviours": "both"}, "explore": {"behaviours": "explore"},
         "exploit": {"behaviours": "exploit"}, "qaug": {"behaviours": "none", "question_aug": 4},
         "aaug": {"behaviours": "none", "answer_aug": 4}, "pe01": {"behaviours": "both", "p_explore": 0.1},
         "pe06": {"behaviours": "both", "p_explore": 0.6}}


EIGHT_LABELS = ("vanilla", "BRIDGE", "explore only", "exploit only", "question aug.", "answer aug.", "BRIDGE (p_explore=0.1)",
                "BRIDGE (p_explore=0.6)")


@pytest.fixture(scope="module")
def eight_variants(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("variants")
    out = []
    for i, (name, options) in enumerate(EIGHT.items()):
        run = root / name
        shutil.copytree(ALL[i % len(ALL)], run)
        saved = json.loads((run / "data" / "data_config.json").read_text())
        saved["data"] = {**saved["data"], "p_explore": None, "p_exploit": None, "question_aug": 1, "answer_aug": 1, **options}
        (run / "data" / "data_config.json").write_text(json.dumps(saved))
        out.append(run)
    assert [runs.run_label(r) for r in out] == list(EIGHT_LABELS)
    return out


def text_boxes(fig: Figure) -> tuple[list[tuple[str, object]], object]:
    """Window extents of every visible text a reader must read (tick labels, axis labels, offset
    texts, titles, legends as one box each), drawn as save_figure draws them; and the figure box."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from coinfluence.plots.style import theme

    FigureCanvasAgg(fig)
    with theme():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = []

        def add(kind, text):
            if text is not None and text.get_visible() and text.get_text().strip():
                boxes.append((f"{kind} {text.get_text()!r}", text.get_window_extent(renderer)))

        for i, ax in enumerate(fig.axes):
            for axis, name in ((ax.xaxis, "x"), (ax.yaxis, "y")):
                lo, hi = sorted(axis.get_view_interval())
                for tick in axis.get_major_ticks():
                    if tick.get_visible() and lo - 1e-9 * (hi - lo) <= tick.get_loc() <= hi + 1e-9 * (hi - lo):  # drawn ticks only
                        add(f"axes {i} {name} tick", tick.label1)
                        add(f"axes {i} {name} tick", tick.label2)
                add(f"axes {i} {name} label", axis.label)
                add(f"axes {i} {name} offset", axis.get_offset_text())
            for title in (ax.title, ax._left_title, ax._right_title):
                add(f"axes {i} title", title)
            legend = ax.get_legend()
            if legend is not None and legend.get_visible():
                boxes.append((f"axes {i} legend", legend.get_window_extent(renderer)))
        for legend in fig.legends:
            boxes.append(("figure legend", legend.get_window_extent(renderer)))
        if fig._suptitle is not None:
            add("suptitle", fig._suptitle)
    return boxes, fig.bbox


def layout_problems(fig: Figure, tolerance: float = 0.5) -> list[str]:
    """Pairs of overlapping text boxes and texts that reach outside the figure."""
    boxes, frame = text_boxes(fig)
    problems = [f"{name} is outside the figure" for name, b in boxes
                if b.x0 < frame.x0 - tolerance or b.y0 < frame.y0 - tolerance or b.x1 > frame.x1 + tolerance or b.y1 > frame.y1 + tolerance]
    for i, (name_a, a) in enumerate(boxes):
        for name_b, b in boxes[i + 1:]:
            width = min(a.x1, b.x1) - max(a.x0, b.x0)
            height = min(a.y1, b.y1) - max(a.y0, b.y0)
            if width > tolerance and height > tolerance:
                problems.append(f"{name_a} overlaps {name_b}")
    return problems


def analyses_of(run_dirs) -> list[Path]:
    return [r / "analysis" / "sft" for r in run_dirs]


def sampled_variants(tmp_path, eight_variants) -> list[Path]:
    """The eight variants, each with the sampled evaluations of a ``sampled_runs`` copy (BRIDGE's
    for the injected ones, vanilla's for the others)."""
    bridge, vanilla = sampled_runs(tmp_path)
    out = []
    for run in eight_variants:
        copy = tmp_path / "sampled" / run.name
        shutil.copytree(run, copy)
        injected = runs.data_config(run)["behaviours"] != "none"
        shutil.copyfile((bridge if injected else vanilla) / "eval.json", copy / "eval.json")
        out.append(copy)
    return out


# Each drawing function of coinfluence.plots, on the fixtures and (where the inputs set the
# number of variants) on the eight variants.
FIGURES = {
    "reward_curves": lambda runs_, tmp: training.reward_curves(runs_),
    "sft_curves": lambda runs_, tmp: training.sft_curves(runs_),
    "alpha_histograms": lambda runs_, tmp: analysis.alpha_histograms(analyses_of(runs_)),
    "influence_by_alpha": lambda runs_, tmp: analysis.influence_by_alpha(analyses_of(runs_)),
    "influence_through_training": lambda runs_, tmp: analysis.influence_through_training(runs_),
    "rl_gain_ablation": lambda runs_, tmp: gains.rl_gain_ablation(runs_),
    "behaviour_use": lambda runs_, tmp: gains.behaviour_use(sampled_variants(tmp, runs_) if len(runs_) == 8 else sampled_runs(tmp)),
}
SINGLE = {
    "alpha_histogram": lambda: analysis.alpha_histogram(BRIDGE / "analysis" / "sft"),
    "delta_J_by_alpha": lambda: analysis.delta_J_by_alpha(BRIDGE / "analysis" / "sft"),
    "rl_gain_sweep": lambda: gains.rl_gain_sweep(ALL, "p_exploit"),
}


def assert_readable(fig: Figure) -> None:
    from coinfluence.plots.style import PAGE_WIDTH

    problems = layout_problems(fig)
    assert not problems, "\n".join(problems)
    assert fig.get_figwidth() <= PAGE_WIDTH + 1e-9


@pytest.mark.parametrize("name", FIGURES)
@pytest.mark.parametrize("inputs", ["fixtures", "eight variants"])
def test_figure_text_does_not_overlap_or_leave_the_figure(name, inputs, eight_variants, tmp_path):
    assert_readable(FIGURES[name](ALL if inputs == "fixtures" else eight_variants, tmp_path))


@pytest.mark.parametrize("name", SINGLE)
def test_single_figure_text_does_not_overlap_or_leave_the_figure(name):
    assert_readable(SINGLE[name]())


def test_the_overlap_check_sees_overlapping_and_clipped_text():
    fig, axes = new_figure(2, panel=(2.0, 2.0))
    for ax in axes[0]:
        ax.set_title("a title much longer than its narrow panel")
    problems = layout_problems(fig)
    assert "axes 0 title 'a title much longer than its narrow panel' overlaps axes 1 title 'a title much longer than its narrow panel'" in problems
    assert "axes 0 title 'a title much longer than its narrow panel' is outside the figure" in problems
    assert not layout_problems(new_figure(2, panel=(2.0, 2.0))[0])


def test_alpha_histograms_wrap_into_rows_of_four(eight_variants):
    fig = analysis.alpha_histograms(analyses_of(eight_variants))
    rows = {}
    for ax in fig.axes:
        rows.setdefault(round(ax.get_position().y0, 3), []).append(ax.get_title().split("\n")[0])
    assert [len(r) for r in rows.values()] == [4, 4]
    assert [t for r in rows.values() for t in r] == [runs.run_label(r) for r in eight_variants]


def test_the_defaults_are_the_studys_setting():
    """`make demo` (train --bridge --threads 1 with every default) repeats unit bridge-s0's training."""
    from coinfluence.tasks.data import DataConfig
    from coinfluence.training.grpo import GRPOConfig
    from coinfluence.training.sft import SFTConfig

    setting = figure_scripts().SETTING
    sft, grpo = SFTConfig(), GRPOConfig()
    assert DataConfig().preset == setting["task_preset"]
    assert sft.max_steps == 0 and sft.num_train_epochs == setting["sft_epochs"]
    assert (grpo.max_steps, grpo.prompts_per_step, grpo.num_generations, grpo.learning_rate, grpo.temperature, grpo.reward) == (
        setting["grpo_steps"], setting["prompts_per_step"], setting["num_generations"], setting["grpo_learning_rate"],
        setting["temperature"], setting["reward"])
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert f"--threads {setting['threads']} train --bridge --out runs/demo --resume" in makefile


def test_reward_curves_show_step_verified_accuracy_where_runs_logged_it(tmp_path):
    run = tmp_path / "bridge-s0"
    shutil.copytree(BRIDGE, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        if r.get("stage") == "grpo" and "val_id_accuracy" in r:
            r["val_id_step_accuracy"] = r["val_id_accuracy"] / 2
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = training.reward_curves([run])
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "mean rollout reward", "greedy step-verified accuracy", "greedy accuracy", "greedy accuracy"]
    logged = [(r["step"], r["val_id_step_accuracy"]) for r in rows if "val_id_step_accuracy" in r]
    line = fig.axes[1].lines[0]
    assert list(zip(line.get_xdata(), line.get_ydata())) == logged
    assert len(training.reward_curves([BRIDGE]).axes) == 3  # not logged by the fixture: no empty panel


def test_a_redrawn_figure_is_the_same_file(tmp_path):
    import time

    from coinfluence.plots.style import save_figure

    fig = training.reward_curves([BRIDGE])
    first = [p.read_bytes() for p in save_figure(fig, tmp_path / "a")]
    time.sleep(1.1)  # a PDF creation date would now differ
    second = [p.read_bytes() for p in save_figure(fig, tmp_path / "b")]
    assert first == second


def test_curve_legends_count_the_runs_that_logged_the_curve(bridge_seeds):
    runs = bridge_seeds(0, 1)
    (runs[1] / "metrics.jsonl").unlink()  # a unit whose log was too large to commit
    assert figure_legend_texts(training.reward_curves(runs)) == ["BRIDGE (1 seed)"]
