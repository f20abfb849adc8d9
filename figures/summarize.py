"""The numbers that figures/README.md quotes, computed from the committed units.

    python figures/summarize.py [RESULTS_DIR]      # default: figures/results
    python figures/summarize.py figures/results-rl-progress --drop-seed 0   # without the seed that chose the setting

Per variant (mean over seeds, per-seed values in brackets where the README gives them): the SFT
analysis (informative share, mean α, share at α=0, mean co-influence of informative queries), the
GRPO training curve (10-step means of ``reward`` and ``completions/mean_length`` at the start and
the end), the RL gain on each test split, the influence time series at each analysed checkpoint,
the injected behaviours in sampled completions of the SFT and RL models, each unit's wall times,
each unit's greedy step-verified ``val_id`` accuracy at every RL test and how its RL went (where
its SFT model came from, that model's validation next to the study unit's, the range of the RL
tests), each unit's step-verified ``test_id`` accuracy (SFT, midway and final RL, gains); then,
over seeds with 95% bootstrap intervals, every variant's accuracies (answer and step-verified,
greedy and mean@8, SFT, RL and gain, and the guess baselines), the claims table with its verdicts
and each claim's per-seed values, and how well the SFT analysis (ΔJ, co-influence, informative
share) ranks the units by RL gain.

Every table figures/README.md shows is printed here also as its Markdown rows (per-unit
accuracies, claims, the comparisons that are not claims), so the README's tables are pasted, not
transcribed; a test checks that each of its rows is one this script prints for a committed
results directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from coinfluence.plots.claims import (COVERAGE, ENDPOINTS, SAMPLED_TAGS, accuracy_table, claims_markdown, claims_table, markdown,
                                      numbers_of, paired_by_seed, points, prediction_markdown, prediction_table,
                                      start_adjusted_table)
from coinfluence.plots.gains import by_difficulty, rl_gains, sampled_behaviours
from coinfluence.plots.runs import (read_json_or_empty, read_metrics, read_queries, read_summary, read_timeseries, run_label,
                                    run_seed)
from coinfluence.run import SFT, Run

ROOT = Path(__file__).resolve().parent
STUDY = ROOT / "results"  # the study setting's units, whose SFT models the other RL settings start from
WINDOW = 10  # steps per mean at each end of the GRPO curve


def curve_ends(metrics: pd.DataFrame, column: str, window: int = WINDOW) -> tuple[float, float]:
    """Means of ``column`` over the first and the last ``window`` GRPO steps (steps 1..window and
    the last ones; the step-0 row holds only the starting validation accuracy)."""
    steps = metrics[metrics["step"] >= 1].sort_values("step")
    return float(steps[column].head(window).mean()), float(steps[column].tail(window).mean())


def curve_windows(metrics: pd.DataFrame, column: str, ends=(10, 50, 100, 200, 400), window: int = WINDOW) -> dict:
    """Means of ``column`` over the ``window`` GRPO steps that end at each step of ``ends`` (steps
    end-window+1..end), and over the last ``window`` steps (``"last"``)."""
    if column not in metrics:
        return dict.fromkeys((*ends, "last"), float("nan"))
    steps = metrics[(metrics["step"] >= 1) & metrics[column].notna()].sort_values("step")
    out = {end: float(steps.loc[steps["step"].between(end - window + 1, end), column].mean()) for end in ends}
    return {**out, "last": float(steps[column].tail(window).mean())}


def unit_row(unit: Path) -> dict:
    """One line of numbers for one unit directory."""
    row = {"unit": unit.name, "variant": run_label(unit)}
    if Run(unit).analysis_summary(SFT).exists():
        sft = Run(unit).analysis_of(SFT)
        s = read_summary(sft)
        alpha = read_queries(sft)["alpha"]
        row.update(informative=s["frac_informative"], mean_alpha=s["mean_alpha"], alpha0=float((alpha == 0).mean()),
                   co_influence=s["mean_co_influence"])
    m = read_metrics(unit)
    for stage, answer, steps in (("sft", "val_accuracy", "val_step_accuracy"), ("grpo", "val_id_accuracy", "val_id_step_accuracy")):
        ms = read_metrics(unit, stage)
        rows = ms[ms[answer].notna()] if answer in ms else ms
        if len(rows):  # greedy validation at the end of the stage
            row[f"{stage}_val"], row[f"{stage}_val_step"] = float(rows[answer].iloc[-1]), float(rows[steps].iloc[-1])
    if "reward" in m:
        for col, name in (("reward", "reward"), ("completions/mean_length", "length")):
            row[f"{name}_first"], row[f"{name}_last"] = curve_ends(m, col)
    times = json.loads((unit / "unit.json").read_text()).get("seconds", {}) if (unit / "unit.json").exists() else {}
    row.update({f"{k}_s": v for k, v in times.items()})
    return row


def step_verified_by_unit(units) -> pd.DataFrame:
    """Step-verified ``test_id`` accuracy (%) of every unit, greedy, mean@8 and pass@8: SFT, the
    final RL model, its gain, and the RL checkpoints tested midway (``rft@N``, ``gain@N``)."""
    table = numbers_of(units).set_index("unit")
    columns = [c for c in table if c.startswith(tuple(f"{tag}/test_id/step_accuracy/" for tag in SAMPLED_TAGS))]
    return (100 * table[columns]).rename(columns=lambda c: c.replace("/test_id/step_accuracy/", " "))


def greedy_markdown(numbers: pd.DataFrame) -> str:
    """Each unit's greedy accuracy (%, answer / step-verified) on both test splits at SFT and
    after RL, and the share of its SFT model's right ``test_id`` answers that are step-verified."""
    def both(r, split, stage):
        return f"{points(r[f'greedy/{split}/accuracy/{stage}'])} / {points(r[f'greedy/{split}/step_accuracy/{stage}'])}"

    rows = []
    for r in numbers.to_dict("records"):
        answered, verified = r["greedy/test_id/accuracy/sft"], r["greedy/test_id/step_accuracy/sft"]
        faithful = points(verified / answered if answered else float("nan"))
        rows.append([r["unit"], both(r, "test_id", "sft"), both(r, "test_id", "rft"), both(r, "test_ood", "sft"),
                     both(r, "test_ood", "rft"), faithful + "%" * (faithful != "—")])
    header = ["unit", "`test_id` SFT", "`test_id` RL", "`test_ood` SFT", "`test_ood` RL", "faithful share of right answers (SFT)"]
    return markdown(header, rows)


def step_verified_markdown(numbers: pd.DataFrame) -> str:
    """Each unit's step-verified ``test_id`` accuracy (%): greedy at SFT, at the RL checkpoints
    tested midway (``step N``) and at the end (``RL``), and the RL gains greedy, mean@8, pass@8."""
    def col(tag, stage):
        return f"{tag}/test_id/step_accuracy/{stage}"

    midway = sorted({int(c.rsplit("@", 1)[1]) for c in numbers if c.startswith(col("greedy", "rft@"))})
    rows = [[r["unit"], points(r[col("greedy", "sft")]), *(points(r[col("greedy", f"rft@{n}")]) for n in midway),
             points(r[col("greedy", "rft")]), *(points(r[col(tag, "gain")], signed=True) for tag in SAMPLED_TAGS)]
            for r in numbers.to_dict("records")]
    header = ["unit", "SFT", *(f"step {n}" for n in midway), "RL", *(f"{tag} gain".replace("greedy ", "") for tag in SAMPLED_TAGS)]
    return markdown(header, rows)


def val_id_tests(log: pd.DataFrame) -> pd.DataFrame:
    """The greedy ``val_id`` tests in a GRPO log (answer and step-verified accuracy, fractions),
    indexed by step; step 0 tests the SFT model RL starts from."""
    columns = ["val_id_accuracy", "val_id_step_accuracy"]
    if columns[1] not in log:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="step"))
    return log[log[columns[1]].notna()].set_index("step")[columns]


def validation_by_step(logs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Greedy step-verified ``val_id`` accuracy (%) at every test of each unit's GRPO log (``logs``:
    unit name -> log), one column per step (step 0 tests the SFT model RL starts from); units
    whose log has no tests are left out."""
    curves = {name: 100 * tests["val_id_step_accuracy"] for name, tests in
              ((name, val_id_tests(log)) for name, log in logs.items()) if len(tests)}
    return pd.DataFrame(curves).T.sort_index(axis=1)


def sft_origin(name: str, record: dict) -> str:
    """Where the SFT model unit ``name`` (its unit.json: ``record``) started RL from: the unit's own
    SFT stage, a study unit's run dir, a rebuild from a study unit's recorded commands, or the
    study's commands run anew for a seed the study never ran. Units that do not record it (those
    landed before run_unit did) are told apart by what they record and by the study's units."""
    if "sft_from" not in record:
        return "its own"
    if "sft_origin" in record:
        return record["sft_origin"]
    if record.get("sft_repeats_study_unit"):
        return "rebuilt"
    return "the study's" if (STUDY / name / "unit.json").exists() else "built anew"


def rl_course_markdown(units, logs: dict[str, pd.DataFrame], numbers: pd.DataFrame) -> str:
    """How each unit's RL went, as figures/README.md rows: where its SFT model came from; that
    model's greedy ``val_id`` accuracy (%, answer / step-verified) and, for a rebuilt one, the
    study unit's; the step-verified ``val_id`` range over the RL tests after step 0, at step 400
    and at the last test; greedy ``test_id`` answer accuracy at SFT, after RL, and its change."""
    answers = numbers.set_index("unit")
    rows = []
    for u in units:
        tests = val_id_tests(logs[u.name])
        start, during = tests[tests.index == 0], tests[tests.index > 0]["val_id_step_accuracy"]
        record = read_json_or_empty(u / "unit.json")
        study = (record.get("sft_repeats_study_unit") or {}).get("last_row")  # [ours, theirs]
        sft, rft = (answers.at[u.name, f"greedy/test_id/accuracy/{stage}"] for stage in ("sft", "rft"))
        rows.append([
            u.name, sft_origin(u.name, record),
            " / ".join(points(start[c].iloc[0]) for c in start) if len(start) else "—",
            f"{points(study['val_accuracy'][1])} / {points(study['val_step_accuracy'][1])}" if study else "—",
            f"{points(during.min())}–{points(during.max())}" if len(during) else "—",
            points(during.get(400, float("nan"))), points(during.iloc[-1]) if len(during) else "—",
            f"{points(sft)} → {points(rft)} ({points(rft - sft, signed=True)})"])
    header = ["unit", "SFT model", "SFT val_id", "study unit's SFT val_id", "RL val_id min–max", "step 400", "last test",
              "`test_id` answer, SFT → RL"]
    return markdown(header, rows)


def units_of(results: Path, drop_seeds: tuple[int, ...] = ()) -> list[Path]:
    """The unit directories under ``results``, without those of the seeds in ``drop_seeds``."""
    return sorted(p for p in results.iterdir() if Run(p).config_path.exists() and run_seed(p) not in drop_seeds)


def print_behaviours(units) -> None:
    """The injected behaviours in the units' sampled completions: how often, how many lines of
    each kind, and how right the samples with them are."""
    print("## injected behaviours in sampled completions (eval --n 8 --temperature 1, test_id), mean over seeds\n")
    sampled = sampled_behaviours(units)
    if len(sampled):
        cols = ["accuracy", "pass@n", "behaviours/frac", "paired_queries", "paired_accuracy_with_behaviours", "paired_accuracy_without_behaviours"]
        print(sampled.groupby(["variant", "stage"])[cols].agg(["mean", "std", "count"]).round(3).to_string(), "\n")
        kinds = [c for c in sampled.columns if c.startswith("behaviours/") and c != "behaviours/frac"]
        if kinds:
            print("lines of each behaviour per sampled completion, mean [min, max] over seeds\n")
            spread = sampled.groupby(["variant", "stage"])[kinds].agg(["mean", "min", "max"])
            print(pd.DataFrame({k.split("/")[1]: [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in spread[k].values]
                                for k in kinds}, index=spread.index).to_string(), "\n")
        print(sampled.drop(columns=["run"]).round(3).to_string(index=False), "\n")


def difficulty_by_unit(units) -> pd.DataFrame:
    """Greedy step-verified ``test_id`` accuracy (%) by the steps a solution needs, one row per
    unit and step count: the problems of that depth, SFT, RL and the gain."""
    table = by_difficulty(units)
    table[["sft", "rft", "gain"]] *= 100
    table["unit"] = [Path(run).name for run in table["run"]]
    return table[["variant", "unit", "steps", "rows", "sft", "rft", "gain"]]


def print_difficulty(units) -> None:
    """Where the step-verified gain sits: each variant's SFT, RL and gain by the steps a solution
    needs, mean [min, max] over the units that record it, then each unit's own numbers."""
    table = difficulty_by_unit(units)
    if not len(table):
        return
    print("## step-verified test_id accuracy (%) by the steps a solution needs, greedy: mean [min, max] over units\n")
    spread = table.groupby(["variant", "steps"]).agg(
        units=("unit", "size"), rows=("rows", "mean"),
        **{c: (c, lambda v: f"{v.mean():.1f} [{v.min():.1f}, {v.max():.1f}]") for c in ("sft", "rft", "gain")})
    print(spread.to_string(), "\n")
    print("## the same, per unit\n")
    print(table.drop(columns="variant").set_index(["unit", "steps"]).round(1).to_string(), "\n")


def print_training(units, logs: dict[str, pd.DataFrame]) -> None:
    """The influence time series over training, the GRPO log's behaviours and step-verified share
    in 10-step windows (units that log ``behaviours/frac``), and the RL validation at every test."""
    print("## influence through training: mean over seeds at each analysed step\n")
    series = []
    for u in units:
        path = Run(u).timeseries
        if path.exists():
            series.append(read_timeseries(path).assign(variant=run_label(u)))
    if series:
        ts = pd.concat(series).groupby(["variant", "step"])[["mean_co_influence", "frac_informative", "mean_delta_J"]]
        print(ts.mean().to_string(), "\n")

    logged = {name: log for name, log in logs.items() if "behaviours/frac" in log}
    if logged:
        print(f"## the GRPO log in {WINDOW}-step windows ending at each step: behaviours/frac, step_accuracy of the rollouts\n")
        windows = {(name, c): curve_windows(log, c) for name, log in logged.items() for c in ("behaviours/frac", "step_accuracy")}
        print(pd.DataFrame(windows).T.round(3).to_string(), "\n")
    validation = validation_by_step(logs)
    if len(validation):
        print("## greedy step-verified val_id accuracy (%) at each RL test, per unit (step 0: the SFT model)\n")
        print(validation.round(1).to_string(), "\n")


def print_comparisons(numbers: pd.DataFrame) -> None:
    """Comparisons the paper makes no claim about, each beside the claims it qualifies."""
    print("## where the paired comparison starts (SFT) and ends (RL): step-verified test_id, not a claim\n")
    print(claims_markdown(claims_table(numbers, ENDPOINTS), first="comparison"), "\n")
    print("## the claims' gains at an equal SFT start: gain = c + slope·SFT + shift·[unit of a] over the paired units of a and b,"
          " not a claim\n")
    adjusted = start_adjusted_table(numbers)
    print(adjusted.to_string(index=False, float_format=lambda v: f"{v:.4g}"), "\n")
    print(claims_markdown(adjusted, first="comparison"), "\n")
    print("## does RL widen what 8 samples solve (step-verified pass@8, test_id), or only sharpen? not a claim\n")
    print(claims_markdown(claims_table(numbers, COVERAGE), first="comparison"), "\n")


def main(results: Path, drop_seeds: tuple[int, ...] = ()) -> None:
    units = units_of(results, drop_seeds)
    if not units:
        sys.exit(f"error: no unit directories under {results}" + (f" without seeds {list(drop_seeds)}" if drop_seeds else ""))
    if drop_seeds:
        print(f"# without seeds {', '.join(map(str, drop_seeds))}\n")
    rows = pd.DataFrame([unit_row(u) for u in units])
    numbers = numbers_of(units)  # read once for every table below
    logs = {u.name: read_metrics(u, "grpo") for u in units}
    pd.set_option("display.width", 200, "display.max_columns", 30, "display.precision", 4)

    print(f"## {len(units)} units\n")
    print(rows.to_string(index=False), "\n")

    print("## per variant: mean [min, max] over its units\n")
    columns = [c for c in rows.columns if c not in ("unit", "variant")]
    spread = rows.groupby("variant")[columns].agg(lambda v: f"{v.mean():.4g} [{v.min():.4g}, {v.max():.4g}]"
                                                  if v.notna().any() else "")
    spread.insert(0, "units", rows.groupby("variant").size())
    print(spread.T.to_string(), "\n")

    print("## RL gain in greedy answer accuracy (points), mean ± s.d. over seeds\n")
    stats = rl_gains(units).groupby(["variant", "split"])["gain"].agg(["mean", "std", "count"])
    stats[["mean", "std"]] *= 100
    print(stats.round(2).to_string(), "\n")

    print_behaviours(units)
    print_training(units, logs)
    print("## step-verified test_id accuracy per unit (%): SFT, RL, gain; midway RL checkpoints as rft@N\n")
    print(step_verified_by_unit(numbers).round(1).to_string(), "\n")
    print_difficulty(units)
    print("## per unit as figures/README.md rows: step-verified test_id accuracy (%) and RL gains\n")
    print(step_verified_markdown(numbers), "\n")
    print("## per unit as figures/README.md rows: how RL went (greedy val_id tests every 50 steps on 200 rows, %)\n")
    print(rl_course_markdown(units, logs, numbers), "\n")
    print("## per unit as figures/README.md rows: greedy accuracy (%), answer / step-verified\n")
    print(greedy_markdown(numbers), "\n")
    print("## accuracy (%), mean [95% bootstrap interval] over seeds\n")
    acc = accuracy_table(numbers)
    acc["value"] = [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" for m, lo, hi in zip(acc["mean"], acc["lo"], acc["hi"])]
    print(acc.pivot(index="measure", columns="variant", values="value").to_string(), "\n")
    print("## claims (decision rule: a difference counts when its 95% bootstrap interval over seeds excludes 0)\n")
    claims = claims_table(numbers)
    print(claims.to_string(index=False, float_format=lambda v: f"{v:.4g}"), "\n")
    print("## each claim per seed: a − b (points for accuracies and shares), the values its interval rests on\n")
    print(paired_by_seed(numbers).to_string(float_format=lambda v: f"{v:.4g}"), "\n")
    print("## claims as figures/README.md rows (points for accuracies and shares)\n")
    print(claims_markdown(claims), "\n")
    print_comparisons(numbers)
    print("## does the SFT model's analysis rank the units as RL does? Spearman's rho over units, 95% bootstrap over units\n")
    prediction = prediction_table(numbers)
    print(prediction.to_string(index=False, float_format=lambda v: f"{v:.2f}"), "\n")
    print("## the same as figures/README.md rows (outcome: greedy step-verified test_id gain)\n")
    print(prediction_markdown(prediction), "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The numbers figures/README.md quotes, from committed units.")
    parser.add_argument("results", nargs="?", type=Path, default=STUDY, help="a directory of units")
    parser.add_argument("--drop-seed", type=int, action="append", default=[],
                        help="leave out this seed's units (repeatable): a sensitivity check, not the decision rule")
    args = parser.parse_args()
    if not args.results.is_dir():
        sys.exit(f"error: {args.results} is not a directory")
    main(args.results, tuple(args.drop_seed))
