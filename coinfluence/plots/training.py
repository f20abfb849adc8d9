"""Training curves of runs: GRPO (the paper's Fig. 1, left) and SFT.

Reads RUN/metrics.jsonl rows with ``"stage": "grpo"``: ``reward`` (mean reward of the step's
rollouts, logged every step) and the greedy ``val_id_step_accuracy`` (answer and every step
right), ``val_id_accuracy`` / ``val_ood_accuracy`` (answer right), logged every ``eval_steps``,
and ``behaviours/frac`` (rollouts with an injected behaviour, every step, where logged);
and rows with ``"stage": "sft"``: ``loss``, ``val_step_accuracy`` and ``val_accuracy``. Runs of
one variant (same label, see ``runs.run_label``) are drawn as their mean over seeds with a ±1 s.d.
band.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from coinfluence.plots.runs import group_runs, read_metrics
from coinfluence.plots.style import figure_legend, panel_grid, save_figure, theme, unique_legend_entries, variant_colors

CURVES = (
    ("reward", "GRPO reward (training batch)", "mean rollout reward"),
    ("val_id_step_accuracy", "in distribution (val_id), step-verified", "greedy step-verified accuracy"),
    ("val_id_accuracy", "in distribution (val_id), answer", "greedy accuracy"),
    ("val_ood_accuracy", "out of distribution (val_ood), answer", "greedy accuracy"),
    ("behaviours/frac", "rollouts with an injected behaviour", "share of the batch's rollouts"),
)
SFT_CURVES = (
    ("loss", "SFT loss (training batch)", "mean token loss"),
    ("val_step_accuracy", "in distribution (val_id), step-verified", "greedy step-verified accuracy"),
    ("val_accuracy", "in distribution (val_id), answer", "greedy accuracy"),
)
STAGE_NAMES = {"grpo": "GRPO", "sft": "SFT"}


def seed_mean(series: Sequence[pd.Series]) -> pd.DataFrame:
    """Mean, s.d. (ddof 1) and count over runs of a metric indexed by step; s.d. is NaN where
    fewer than two runs logged the step."""
    table = pd.concat(list(series), axis=1)
    return pd.DataFrame({"mean": table.mean(axis=1), "std": table.std(axis=1, ddof=1), "n": table.count(axis=1)})


def metric_by_step(df: pd.DataFrame, column: str, window: int = 1) -> pd.Series:
    """One run's ``column`` of its metrics rows ``df`` indexed by step (rows that did not log it
    dropped), with a trailing rolling mean over ``window`` logged points."""
    if column not in df:
        return pd.Series(dtype=float, name=column)
    s = df.dropna(subset=[column]).set_index("step")[column].astype(float)
    return s.rolling(window, min_periods=1).mean() if window > 1 else s


def reward_curves(run_dirs, out_path=None, window: int = 1, columns=CURVES) -> Figure:
    """GRPO reward and greedy val_id / val_ood accuracy against the RL step, one line per variant
    (mean over seeds, band ±1 s.d. where ≥2 seeds). ``window`` smooths the (noisy, per-step)
    reward and the share of rollouts with injected behaviours with a trailing mean; the
    accuracies are drawn as logged."""
    return metric_curves(run_dirs, "grpo", columns, out_path, windows={"reward": window, "behaviours/frac": window})


def sft_curves(run_dirs, out_path=None, columns=SFT_CURVES) -> Figure:
    """SFT loss and greedy val_id accuracy against the SFT step, one line per variant."""
    return metric_curves(run_dirs, "sft", columns, out_path)


def metric_curves(run_dirs, stage: str, columns, out_path=None, windows: dict[str, int] | None = None) -> Figure:
    """One panel per (column, title, y label) of ``stage``'s metrics that some run logged, against
    its step, one line per variant (mean over seeds, band ±1 s.d. where ≥2 seeds), one legend
    below the panels; columns named ``*accuracy`` or ``*frac`` get a 0..1 axis, ``windows`` gives
    a trailing mean per column."""
    groups = group_runs(run_dirs)
    colors = variant_colors(groups)
    windows = windows or {}
    metrics = {label: [read_metrics(r, stage) for r in runs] for label, runs in groups.items()}
    # a panel only for what some run logged (runs older than step verification have no such column)
    logged = [c for c in columns if any(c[0] in df for frames in metrics.values() for df in frames)]
    columns = logged or list(columns)
    # a variant's legend entry counts the seeds of its fullest panel; a panel that fewer seeds
    # logged (a metric added later, a unit whose log is not kept) says so in its title
    seeds = {label: max([sum(bool(c in df and df[c].notna().any()) for df in frames) for c, _, _ in columns] or [0])
             for label, frames in metrics.items()}
    with theme():
        fig, axes = panel_grid(len(columns), panel=(4.2, 2.8), max_columns=2)
        for ax, (column, title, ylabel) in zip(axes, columns):
            w, fewer = windows.get(column, 1), []
            for label, frames in metrics.items():
                stats = seed_mean([metric_by_step(df, column, w) for df in frames])
                stats = stats[stats["n"] > 0]
                if not len(stats):
                    continue
                n, total = int(stats["n"].max()), seeds[label]
                fewer += [f"{label}: {n} of {total} seeds"] if n < total else []
                ax.plot(stats.index, stats["mean"], color=colors[label], marker="o" if len(stats) < 12 else None,
                        ms=3, lw=1.5, label=f"{label} ({total} seed{'s' * (total > 1)})")
                band = stats.dropna(subset=["std"])
                if len(band):
                    ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"],
                                    color=colors[label], alpha=0.2, lw=0)
            ax.set_title(title + (f", {w}-step mean" if w > 1 else "") + ("\n(" + "; ".join(fewer) + ")" if fewer else ""))
            ax.set_xlabel(f"{STAGE_NAMES.get(stage, stage)} step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            if column.endswith(("accuracy", "frac")):
                ax.set_ylim(-0.02, 1.02)
        # one legend for all panels: a variant may lack a metric in some of them
        figure_legend(fig, *unique_legend_entries(axes), title="mean ±1 s.d." if any(len(r) > 1 for r in groups.values()) else None)
        if out_path is not None:
            save_figure(fig, out_path)
    return fig
