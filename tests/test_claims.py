"""Bootstrap intervals and the decision rule of the claims table."""

import numpy as np
import pytest

from coinfluence.plots.claims import bootstrap_interval, difference_interval, verdict


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(1)
    few, many = rng.normal(1.0, 1.0, 5), rng.normal(1.0, 1.0, 200)
    m5, lo5, hi5 = bootstrap_interval(few)
    m200, lo200, hi200 = bootstrap_interval(many)
    assert lo5 < m5 < hi5 and lo200 < m200 < hi200
    assert hi200 - lo200 < (hi5 - lo5) / 3
    assert abs(m200 - 1.0) < 0.2 and lo200 < 1.0 < hi200
    assert bootstrap_interval([3.0])[0] == 3.0 and np.isnan(bootstrap_interval([3.0])[1])


def test_constant_values_give_a_point_interval():
    assert bootstrap_interval([0.2] * 5) == pytest.approx((0.2, 0.2, 0.2))


def test_pairing_by_seed_removes_the_shared_seed_effect():
    # Each seed shifts both variants alike; the difference is always +0.01.
    seed_effect = {s: 0.3 * np.sin(s) for s in range(6)}
    a = {s: seed_effect[s] + 0.01 for s in range(6)}
    b = dict(seed_effect)
    mean, lo, hi, n = difference_interval(a, b)
    assert n == 6 and mean == pytest.approx(0.01) and lo == pytest.approx(0.01) and hi == pytest.approx(0.01)
    # without shared seeds the same numbers cannot separate the variants
    b_shifted = {s + 100: v for s, v in b.items()}
    mean, lo, hi, n = difference_interval(a, b_shifted)
    assert n == 0 and lo < 0 < hi


@pytest.mark.parametrize("lo, hi, sign, expected", [
    (0.01, 0.05, 1, "reproduced"), (-0.05, -0.01, 1, "opposite"), (-0.01, 0.05, 1, "not reproduced"),
    (-0.05, -0.01, -1, "reproduced"), (float("nan"), float("nan"), 1, "too few seeds"),
    (0.01, 0.05, 0, "higher"), (-0.05, -0.01, 0, "lower"), (-0.01, 0.05, 0, "no difference")])
def test_verdicts(lo, hi, sign, expected):
    assert verdict(lo, hi, sign) == expected


def test_two_seeds_of_the_same_sign_are_too_few():
    # The percentile interval of two values is their range: it excludes 0 whenever both agree.
    mean, lo, hi, n = difference_interval({0: 0.03, 1: 0.05}, {0: 0.0, 1: 0.0})
    assert (lo, hi, n) == (pytest.approx(0.03), pytest.approx(0.05), 2)
    assert verdict(lo, hi, 1, seeds=n) == "too few seeds"
    assert verdict(lo, hi, 1, seeds=5) == "reproduced"


def fake_unit(root, behaviours, seed, sft_step, rft_step, informative=0.5):
    import json

    unit = root / f"{behaviours}-s{seed}"
    (unit / "data").mkdir(parents=True)
    (unit / "analysis" / "sft").mkdir(parents=True)
    (unit / "data" / "data_config.json").write_text(json.dumps({"data": {"behaviours": behaviours, "seed": seed}}))
    (unit / "config.json").write_text(json.dumps({"train": {"seed": seed}}))
    result = lambda step: {s: {"accuracy": step + 0.1, "step_accuracy": step, "num_rows": 500} for s in ("test_id", "test_ood")}  # noqa: E731
    (unit / "eval.json").write_text(json.dumps({"checkpoints": {"sft": result(sft_step), "grpo/final": result(rft_step)}}))
    (unit / "analysis" / "sft" / "summary.json").write_text(json.dumps({"frac_informative": informative, "mean_co_influence": 1e-3}))
    return unit


def test_claims_table_from_units(tmp_path):
    from coinfluence.plots.claims import claims_table, unit_numbers

    units = []
    for seed in range(5):
        base = 0.3 + 0.05 * seed  # a seed effect shared by both variants
        units.append(fake_unit(tmp_path, "none", seed, base, base + 0.02, informative=0.40))
        units.append(fake_unit(tmp_path, "both", seed, base, base + 0.12 + 0.01 * (seed % 2), informative=0.35))
    row = unit_numbers(units[1])
    assert row["variant"] == "BRIDGE" and row["seed"] == 0
    assert row["greedy/test_id/step_accuracy/gain"] == pytest.approx(0.12)
    assert np.isnan(row["mean@8/test_id/step_accuracy/gain"])  # no sampled evaluation in these units
    table = claims_table(units).set_index("claim")
    gain = table.loc["BRIDGE gains more from RL than vanilla, ID"]
    assert gain["seeds"] == 5 and gain["mean"] == pytest.approx(0.104) and gain["verdict"] == "reproduced"
    assert table.loc["BRIDGE's SFT model leaves more queries informative", "verdict"] == "opposite"
    assert table.loc["RL raises step-verified accuracy (vanilla)", "verdict"] == "reproduced"
    assert "both behaviours gain more than exploration alone" not in table.index  # no explore-only units
    few = claims_table(units[:6]).set_index("claim")  # seeds 0-2 of each variant
    assert few.loc["BRIDGE gains more from RL than vanilla, ID", "seeds"] == 3
    assert few.loc["BRIDGE gains more from RL than vanilla, ID", "verdict"] == "too few seeds"


def test_paired_by_seed_gives_the_differences_the_interval_rests_on(tmp_path):
    from coinfluence.plots.claims import claims_table, paired_by_seed

    units = [fake_unit(tmp_path, "none", seed, 0.3, 0.3 + 0.01 * seed, informative=0.40) for seed in range(5)]
    units += [fake_unit(tmp_path, "both", seed, 0.3, 0.35 + 0.02 * seed, informative=0.5) for seed in range(1, 5)]  # no seed 0
    table = paired_by_seed(units)
    gain = table.loc["BRIDGE gains more from RL than vanilla, ID"]
    assert np.isnan(gain[0]) and gain[[1, 2, 3, 4]].tolist() == pytest.approx([6.0, 7.0, 8.0, 9.0])  # points
    assert table.loc["RL raises step-verified accuracy (vanilla)"].tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert table.loc["BRIDGE's SFT model has larger co-influence", 1] == pytest.approx(0.0)  # not in points
    interval = claims_table(units).set_index("claim").loc["BRIDGE gains more from RL than vanilla, ID"]
    assert interval["seeds"] == 4 and 100 * interval["mean"] == pytest.approx(gain.mean())


def test_accuracy_table_means_and_intervals_per_variant(tmp_path):
    from coinfluence.plots.claims import accuracy_table

    units = [fake_unit(tmp_path, "none", seed, 0.3 + 0.1 * seed, 0.35 + 0.1 * seed, informative=0.4) for seed in range(3)]
    table = accuracy_table(units).set_index("measure")
    gain = table.loc["greedy/test_id/step_accuracy/gain"]
    assert gain["variant"] == "vanilla" and gain["seeds"] == 3
    assert gain["mean"] == pytest.approx(5.0) and gain["lo"] == pytest.approx(5.0) and gain["hi"] == pytest.approx(5.0)
    sft = table.loc["greedy/test_id/step_accuracy/sft"]
    assert sft["mean"] == pytest.approx(40.0) and sft["lo"] < 40.0 < sft["hi"]
    assert table.loc["mean@8/test_id/accuracy/sft", "seeds"] == 0  # no sampled evaluation in these units


def test_rl_checkpoints_tested_midway_get_their_own_columns(tmp_path):
    import json

    from coinfluence.plots.claims import accuracy_table, unit_numbers

    units = [fake_unit(tmp_path, "none", seed, 0.3, 0.4) for seed in range(2)]
    for unit in units:
        saved = json.loads((unit / "eval.json").read_text())
        saved["checkpoints"]["grpo/step-000400"] = {s: {"accuracy": 0.5, "step_accuracy": 0.36, "num_rows": 500}
                                                    for s in ("test_id", "test_ood")}
        saved["checkpoints"]["grpo/final@n8-t1"] = {"test_id": {"accuracy": 0.5, "step_accuracy": 0.2, "num_rows": 500}}
        (unit / "eval.json").write_text(json.dumps(saved))
    row = unit_numbers(units[0])
    assert row["greedy/test_id/step_accuracy/rft@400"] == 0.36
    assert row["greedy/test_ood/step_accuracy/gain@400"] == pytest.approx(0.06)
    assert row["greedy/test_id/step_accuracy/gain"] == pytest.approx(0.1)  # grpo/final is still the RL model
    assert not any("@n8" in key for key in row if "rft@" in key or "gain@" in key)
    table = accuracy_table(units).set_index("measure")
    assert table.loc["greedy/test_id/step_accuracy/gain@400", "mean"] == pytest.approx(6.0)
    assert list(table.index).index("greedy/test_id/step_accuracy/gain@400") > list(table.index).index("test_id/guess/majority")


def test_claims_markdown_reports_accuracies_in_points_and_co_influence_raw(tmp_path):
    from coinfluence.plots.claims import claims_markdown, claims_table

    units = []
    for seed in range(5):
        units.append(fake_unit(tmp_path, "none", seed, 0.3, 0.32, informative=0.40))
        units.append(fake_unit(tmp_path, "both", seed, 0.3, 0.42, informative=0.35))
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in claims_markdown(claims_table(units)).splitlines()[2:]}
    gain = rows["BRIDGE gains more from RL than vanilla, ID"]
    assert gain[1] == "greedy/test_id/step_accuracy/gain, BRIDGE − vanilla"
    assert gain[2] == "+10.0 [+10.0, +10.0]" and gain[3] == "5" and gain[4] == "reproduced |"
    assert rows["BRIDGE's SFT model leaves more queries informative"][2] == "−5.0 [−5.0, −5.0]"
    assert rows["BRIDGE's SFT model has larger co-influence"][2] == "+0.0e+00 [+0.0e+00, +0.0e+00]"


def test_spearman_ranks_and_ties():
    from coinfluence.plots.claims import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 35, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_endpoints_separate_a_larger_gain_from_a_higher_end(tmp_path):
    from coinfluence.plots.claims import ENDPOINTS, claims_table

    units = []
    for seed in range(5):  # BRIDGE starts 10 points lower and gains 5 more: it still ends lower
        units.append(fake_unit(tmp_path, "none", seed, 0.30 + 0.01 * seed, 0.35 + 0.01 * seed))
        units.append(fake_unit(tmp_path, "both", seed, 0.20 + 0.01 * seed, 0.30 + 0.01 * seed))
    table = claims_table(units, ENDPOINTS).set_index("measure")
    assert table.loc["greedy/test_id/step_accuracy/sft", "mean"] == pytest.approx(-0.10)
    assert table.loc["greedy/test_id/step_accuracy/rft", "verdict"] == "lower"
    assert claims_table(units).set_index("claim").loc["BRIDGE gains more from RL than vanilla, ID", "verdict"] == "reproduced"
    assert np.isnan(table.loc["mean@8/test_id/step_accuracy/rft", "mean"])  # no sampled evaluation in these units


def test_pass_at_8_reads_the_sampled_evaluations_own_key(tmp_path):
    import json

    from coinfluence.plots.claims import COVERAGE, accuracy_table, claims_table, unit_numbers

    units = []
    for seed in range(5):  # RL sharpens vanilla (mean@8 up, pass@8 down) and widens BRIDGE
        for behaviours, (before, after) in (("none", (0.40, 0.35)), ("both", (0.30, 0.34))):
            unit = fake_unit(tmp_path, behaviours, seed, 0.2, 0.25)
            saved = json.loads((unit / "eval.json").read_text())
            for ckpt, p in (("sft", before), ("grpo/final", after)):
                sampled = {"accuracy": 0.5, "step_accuracy": 0.1, "pass@8": 0.9, "step_pass@8": p + 0.001 * seed}
                saved["checkpoints"][ckpt + "@n8-t1"] = {"test_id": sampled}
            (unit / "eval.json").write_text(json.dumps(saved))
            units.append(unit)
    row = unit_numbers(units[0])
    assert row["pass@8/test_id/step_accuracy/gain"] == pytest.approx(-0.05)
    assert row["pass@8/test_id/accuracy/sft"] == pytest.approx(0.9) and row["mean@8/test_id/step_accuracy/sft"] == pytest.approx(0.1)
    table = claims_table(units, COVERAGE).set_index("measure")
    assert list(table["verdict"]) == ["higher", "lower", "higher"]
    assert table["mean"].tolist() == pytest.approx([0.04, -0.05, 0.09])
    assert accuracy_table(units).set_index(["variant", "measure"]).loc[("vanilla", "pass@8/test_id/step_accuracy/rft"), "mean"] == pytest.approx(35.2)


def test_prediction_table_ranks_units_by_their_sft_analysis(tmp_path):
    import json

    from coinfluence.plots.claims import prediction_table

    units = []
    for seed in range(10):
        gain = 0.01 * seed
        unit = fake_unit(tmp_path, "both", seed, 0.2, 0.2 + gain, informative=0.95 - 0.05 * seed)
        summary = unit / "analysis" / "sft" / "summary.json"
        saved = json.loads(summary.read_text())
        saved["mean_delta_J"] = 1e-4 * seed ** 2  # monotone in the gain, not linear
        summary.write_text(json.dumps(saved))
        units.append(unit)
    table = prediction_table(units, resamples=500).set_index("predictor")
    assert table.loc["sft/mean_delta_J", "rho"] == pytest.approx(1.0) and table.loc["sft/mean_delta_J", "units"] == 10
    assert table.loc["sft/mean_delta_J", "lo"] == pytest.approx(1.0)
    few = prediction_table(units[:6], resamples=500).set_index("predictor")
    assert few.loc["sft/mean_delta_J", "rho"] == pytest.approx(1.0) and np.isnan(few.loc["sft/mean_delta_J", "lo"])
    assert table.loc["sft/frac_informative", "rho"] == pytest.approx(-1.0)
    assert np.isnan(table.loc["sft/mean_co_influence", "rho"])  # the same in every unit: no ranking

    from coinfluence.plots.claims import prediction_markdown

    rows = prediction_markdown(table.reset_index()).splitlines()
    assert rows[0] == "| SFT number | units | Spearman ρ with the RL gain [95% interval] |"
    assert "| sft/mean_delta_J | 10 | +1.00 [+1.00, +1.00] |" in rows
    assert "| sft/mean_co_influence | 10 | — |" in rows
    assert "| sft/mean_delta_J | 6 | +1.00 |" in prediction_markdown(few.reset_index())  # too few units: no interval


def test_prediction_table_sets_the_headroom_baseline_beside_the_analysis(tmp_path):
    from coinfluence.plots.claims import prediction_table

    units = [fake_unit(tmp_path, "none", seed, 0.4 - 0.02 * seed, 0.45) for seed in range(10)]
    table = prediction_table(units, resamples=200).set_index("predictor")
    assert table.loc["greedy/test_id/step_accuracy/sft", "rho"] == pytest.approx(-1.0)  # weaker SFT, larger gain
    assert table.loc["greedy/test_id/step_accuracy/sft", "units"] == 10


def test_claims_figure_draws_each_claim_in_points_coloured_by_its_verdict(tmp_path):
    import matplotlib.colors

    from coinfluence.plots.claims import VERDICT_COLORS, claims_figure, claims_table

    units = []
    for seed in range(5):
        base = 0.3 + 0.05 * seed
        units.append(fake_unit(tmp_path, "none", seed, base, base + 0.02, informative=0.40))
        units.append(fake_unit(tmp_path, "both", seed, base, base + 0.12 + 0.01 * (seed % 2), informative=0.35))
    units.append(fake_unit(tmp_path, "explore", 0, 0.3, 0.25))  # one seed: drawn, hollow, no interval
    fig = claims_figure(units, tmp_path / "claims")
    assert (tmp_path / "claims.png").exists() and (tmp_path / "claims.pdf").exists()
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()][::-1]  # drawn bottom-up, first claim on top
    table = claims_table(units).set_index("claim")
    assert "BRIDGE's SFT model has larger co-influence" in table.index and "BRIDGE's SFT model has larger co-influence" not in names
    assert names[0] == "RL raises step-verified accuracy (BRIDGE)" and "exploration alone gains more than none" in names
    markers = [line for line in ax.lines if line.get_marker() == "o"][::-1]
    for name, marker in zip(names, markers):
        row = table.loc[name]
        assert marker.get_xdata()[0] == pytest.approx(100 * row["mean"])
        assert matplotlib.colors.same_color(marker.get_color(), VERDICT_COLORS[row["verdict"]])
        assert (marker.get_markerfacecolor() == "white") == (row["verdict"] == "too few seeds")
    assert table.loc["BRIDGE's SFT model leaves more queries informative", "verdict"] == "opposite"


def test_start_adjusted_gain_removes_the_headroom_of_a_weaker_start(tmp_path):
    from coinfluence.plots.claims import claims_table, start_adjusted_table

    units = []
    for seed in range(5):  # gain = 0.30 − 0.5·start (+0.03 for BRIDGE); BRIDGE starts 0.10 lower
        for behaviours, start, bonus in (("none", 0.30 + 0.02 * seed, 0.0), ("both", 0.20 + 0.03 * seed, 0.03)):
            units.append(fake_unit(tmp_path, behaviours, seed, start, start + 0.30 - 0.5 * start + bonus))
    units.append(fake_unit(tmp_path, "both", 7, 0.1, 0.9))  # no vanilla unit of seed 7: left out of the pairs
    raw = claims_table(units).set_index("claim").loc["BRIDGE gains more from RL than vanilla, ID"]
    table = start_adjusted_table(units, resamples=500).set_index("measure")
    row = table.loc["greedy/test_id/step_accuracy/gain"]
    assert raw["mean"] == pytest.approx(0.03 + 0.5 * 0.08)  # BRIDGE starts 0.08 lower on average: headroom counted
    assert (row["mean"], row["slope"], row["seeds"]) == (pytest.approx(0.03), pytest.approx(-0.5), 5)
    assert (row["lo"], row["hi"]) == (pytest.approx(0.03), pytest.approx(0.03))  # an exact line in every resample
    assert row["verdict"] == "higher"
    sampled = table.loc["mean@8/test_id/step_accuracy/gain"]  # no sampled evaluation in these units
    assert sampled["seeds"] == 0 and np.isnan(sampled["mean"]) and sampled["verdict"] == "too few seeds"
    few = start_adjusted_table(units[:6], resamples=200).set_index("measure").loc["greedy/test_id/step_accuracy/gain"]
    assert few["seeds"] == 3 and few["verdict"] == "too few seeds" and np.isnan(few["lo"])  # resamples of 3 seeds: mostly exact fits
    assert few["mean"] == pytest.approx(0.03)


def test_start_adjusted_fit_is_the_least_squares_line_of_a_plain_loop():
    from coinfluence.plots.claims import start_adjusted_fit

    rng = np.random.default_rng(3)
    start, is_a = rng.uniform(0.1, 0.3, 12), np.arange(12) % 2 == 0
    gain = 0.02 + 0.3 * start + 0.04 * is_a + rng.normal(0, 0.01, 12)
    # normal equations solved by hand for the three coefficients
    design = [[1.0, s, float(a)] for s, a in zip(start, is_a)]
    gram = [[sum(r[i] * r[j] for r in design) for j in range(3)] for i in range(3)]
    moment = [sum(r[i] * g for r, g in zip(design, gain)) for i in range(3)]
    _, slope, shift = np.linalg.solve(gram, moment)
    assert start_adjusted_fit(gain, start, is_a) == (pytest.approx(shift), pytest.approx(slope))
    assert all(np.isnan(start_adjusted_fit(gain, np.full(12, 0.2), is_a)))  # every start equal: no slope


def test_gain_against_start_draws_the_fitted_parallel_lines(tmp_path):
    from coinfluence.plots import report
    from coinfluence.plots.claims import gain_against_start

    units = []
    for seed in range(5):  # gain = 0.30 − 0.5·start (+0.03 for BRIDGE); BRIDGE starts lower
        for behaviours, start, bonus in (("none", 0.30 + 0.02 * seed, 0.0), ("both", 0.20 + 0.03 * seed, 0.03)):
            units.append(fake_unit(tmp_path, behaviours, seed, start, start + 0.30 - 0.5 * start + bonus))
    fig = gain_against_start(units, out_path=tmp_path / "gain_against_start")
    (ax,) = fig.axes  # greedy only: these units have no sampled evaluation
    (bridge_x, bridge_y), (vanilla_x, vanilla_y) = (line.get_data() for line in ax.lines[:2])
    assert list(bridge_x) == pytest.approx([20.0, 32.0]) and list(vanilla_x) == pytest.approx([30.0, 38.0])
    gap = lambda x, y: y - (-0.5 * x + 30.0)  # noqa: E731  (points: the planted line, 100 × (0.30 − 0.5·start))
    assert [gap(x, y) for x, y in zip(bridge_x, bridge_y)] == pytest.approx([3.0, 3.0])
    assert [gap(x, y) for x, y in zip(vanilla_x, vanilla_y)] == pytest.approx([0.0, 0.0])
    assert sum(len(c.get_offsets()) for c in ax.collections) == 10  # a dot per unit
    assert (tmp_path / "gain_against_start.png").exists()
    assert "gain_against_start" in report.plan(units)
    assert "gain_against_start" not in report.plan([u for u in units if u.name.startswith("both")])  # nothing to compare
    assert "gain_against_start" not in report.plan(units[:8])  # four seeds: a line, but not the seeds a verdict needs
