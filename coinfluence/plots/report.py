"""Draw every figure a set of run and analysis dirs supports (``coinfluence plot`` and
figures/make_figures.py).

- run dirs (metrics.jsonl / eval.json / config.json): reward curves, Table 1, the paper's
  claims with their intervals over seeds (claims.png), each unit's gain against its SFT start
  (gain_against_start.png), accuracy by the steps a solution needs,
  the behaviour ablation, the injection-probability sweeps, and (from sampled evaluations) what RL does to the
  injected behaviours; their SFT analysis (RUN/analysis/sft) joins the
  analyses and their RUN/analysis/timeseries.csv the influence-through-training figure;
- analysis dirs (summary.json): α histograms and influence by α;
- dirs with timeseries.csv (``analyze --all-checkpoints`` output): influence through training.
"""

from __future__ import annotations

from pathlib import Path

from coinfluence.errors import UserError
from coinfluence.plots import analysis, claims, gains, training
from coinfluence.plots.runs import (
    is_analysis_dir, is_run_dir, is_timeseries_dir, read_metrics, rl_gain, run_label, sft_analysis,
)
from coinfluence.run import SFT, Run, analysis_dir_name

# What draw_all can write, by output name (without suffix).
NAMES = ("reward_curves", "alpha_histograms", "influence_by_alpha", "influence_through_training", "table1",
         "rl_gain_ablation", "rl_start_end", "rl_gain_sweep_p_explore", "rl_gain_sweep_p_exploit", "behaviour_use", "claims",
         "accuracy_by_difficulty", "gain_against_start")


def classify(paths) -> dict[str, list[Path]]:
    """Sort the given dirs into runs, analyses and timeseries dirs; a path that is missing or is
    none of these is a UserError (raised before anything is drawn)."""
    found: dict[str, list[Path]] = {"runs": [], "analyses": [], "timeseries": []}
    if not paths:
        raise UserError("pass at least one run or analysis directory")
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"not found: {p}")
        if not p.is_dir():
            raise UserError(f"not a directory: {p} (pass a run dir or an analysis dir)")
        if is_analysis_dir(p):
            found["analyses"].append(p)
        elif is_timeseries_dir(p):
            found["timeseries"].append(p)
        elif is_run_dir(p):
            found["runs"].append(p)
        else:
            raise UserError(f"{p} is neither a run dir (metrics.jsonl, eval.json, config.json) "
                            "nor an analysis dir (summary.json, or timeseries.csv of --all-checkpoints)")
    return found


def _unique(paths: list[Path]) -> list[Path]:
    """Drop paths that name a dir already listed (the same run given twice, or as RUN and RUN/analysis)."""
    seen, out = set(), []
    for p in paths:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def _sweep_values(runs, param: str) -> set[float]:
    points = gains.sweep_points(runs, param)
    return set(points["p"]) if len(points) else set()


def plan(paths) -> dict[str, tuple]:
    """What can be drawn from ``paths``: figure name -> (function, inputs, kwargs)."""
    found = classify(paths)
    runs = _unique(found["runs"])
    sft = analysis_dir_name(SFT)
    # A run (or an --all-checkpoints output dir) brings along the analysis of its SFT checkpoint.
    analyses = _unique(found["analyses"] + [a for r in runs if (a := sft_analysis(r)) is not None]
                       + [t / sft for t in found["timeseries"] if is_analysis_dir(t / sft)])
    series = _unique(found["timeseries"] + [Run(r).analysis for r in runs if is_timeseries_dir(Run(r).analysis)])
    todo: dict[str, tuple] = {}
    if any("reward" in read_metrics(r, "grpo") for r in runs):
        todo["reward_curves"] = (training.reward_curves, runs, {})
    evaluated = [r for r in runs if rl_gain(r)]
    if evaluated:
        todo["table1"] = (gains.table1, evaluated, {})
        todo["rl_start_end"] = (gains.rl_start_end, evaluated, {})
        if len(gains.by_difficulty(evaluated, metric=gains.primary_metric(evaluated))):
            todo["accuracy_by_difficulty"] = (gains.accuracy_by_difficulty, evaluated, {})
        if len(claims.claims_in_points(evaluated)):
            todo["claims"] = (claims.claims_figure, evaluated, {})
        if len(claims.drawn_start_adjusted(evaluated)):
            todo["gain_against_start"] = (claims.gain_against_start, evaluated, {})
        settings = {run_label(r) for r in evaluated} & {label for label, _ in gains.ABLATION}
        if len(settings) >= 2:
            todo["rl_gain_ablation"] = (gains.rl_gain_ablation, evaluated, {})
        for param in ("p_explore", "p_exploit"):
            if len(_sweep_values(evaluated, param)) >= 2:
                todo[f"rl_gain_sweep_{param}"] = (gains.rl_gain_sweep, evaluated, {"param": param})
    sampled = [r for r in runs if len(gains.sampled_behaviours([r]))]
    if sampled:
        todo["behaviour_use"] = (gains.behaviour_use, sampled, {})
    if analyses:
        todo["alpha_histograms"] = (analysis.alpha_histograms, analyses, {})
        todo["influence_by_alpha"] = (analysis.influence_by_alpha, analyses, {})
    if series:
        todo["influence_through_training"] = (analysis.influence_through_training, series, {})
    return todo


def draw_all(paths, out_dir, reward_window: int = 1) -> list[Path]:
    """Draw everything ``paths`` support into ``out_dir`` (PNG + PDF; Table 1 as .md + .csv);
    returns the files written."""
    todo = plan(paths)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for name, (fn, inputs, kwargs) in todo.items():
        base = out_dir / name
        if name == "reward_curves":
            kwargs = {**kwargs, "window": reward_window}
        fn(inputs, out_path=base, **kwargs)
        suffixes = (".md", ".csv") if name == "table1" else (".png", ".pdf")
        written += [base.with_suffix(s) for s in suffixes]
    return written
