"""Figures from the files ``coinfluence analyze`` wrote (never from a live model).

One analysis dir (``analyze`` draws these into ANALYSIS/figures/):

- :func:`alpha_histogram`: how the train queries' rollout accuracy α is spread.
- :func:`delta_J_by_alpha`: ΔJ per train query against α, the mean per α bin, and the
  envelope ``±max|co_influence|·weight(α)`` — ΔJ = weight·co_influence, so the α-dependent
  factor bounds what any query can contribute.

Several analyses, grouped by the variant of their run (the paper's Fig. 1 middle and right):

- :func:`alpha_histograms`: α histograms side by side, informative region 0<α<1 shaded.
- :func:`influence_by_alpha`: mean ΔJ per α bin per variant with the √(α(1−α)) envelope, and
  the mean co-influence of each variant.
- :func:`influence_through_training`: co-influence, ΔJ and the informative share at each
  checkpoint (``analyze --run RUN --all-checkpoints`` → timeseries.csv).

All read ANALYSIS/queries.parquet rows with ``role == "train"`` (columns ``alpha``,
``n_correct``, ``num_generations``, ``weight``, ``co_influence``, ``delta_J``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from coinfluence.plots.runs import group_analyses, is_run_dir, read_queries, read_timeseries, run_label, run_of_analysis
from coinfluence.plots.style import (
    PALETTE, figure_legend, new_figure, order_variants, panel_grid, save_figure, theme, unique_legend_entries, variant_colors,
)

INFORMATIVE_LABEL = "informative 0<α<1"


def _train_queries(analysis_dir) -> pd.DataFrame:
    return read_queries(analysis_dir, "train")


def _num_generations(df: pd.DataFrame) -> int:
    return int(df["num_generations"].iloc[0]) if len(df) else 1


def _informative(df: pd.DataFrame) -> pd.Series:
    return df["alpha"].between(0, 1, inclusive="neither")


def envelope(a: np.ndarray, df: pd.DataFrame) -> np.ndarray:
    """weight(α) on a grid: ``c·√(α(1−α))`` (group scaling; c = 1, or √((G−1)/G) for the
    unbiased std, read off the saved weights) or ``α(1−α)`` (no scaling)."""
    inf = df[_informative(df)]
    if not len(inf):
        return np.sqrt(a * (1 - a))
    ratio = inf["weight"] / np.sqrt(inf["alpha"] * (1 - inf["alpha"]))
    if np.allclose(ratio, ratio.iloc[0], rtol=1e-6):
        return float(ratio.iloc[0]) * np.sqrt(a * (1 - a))
    return a * (1 - a)


def alpha_histogram(analysis_dir, out_path=None) -> Figure:
    """Count of train queries per rollout accuracy α = n_correct/G of one analysis."""
    df = _train_queries(analysis_dir)
    G = _num_generations(df)
    counts = np.bincount(df["n_correct"].astype(int), minlength=G + 1)
    with theme():
        fig, axes = new_figure(panel=(4.5, 3))
        ax = axes[0, 0]
        ax.bar(np.arange(G + 1) / G, counts, width=0.8 / G, color=PALETTE[0])
        _alpha_ticks(ax, G)
        ax.set_xlabel("rollout accuracy α")
        ax.set_ylabel("train queries")
        informative = _informative(df).mean() if len(df) else 0.0
        ax.set_title(f"α per query (informative 0<α<1: {informative:.0%})")
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def delta_J_by_alpha(analysis_dir, out_path=None) -> Figure:
    """ΔJ of each train query against its α, the mean per α, and ±max|co-influence|·w(α)."""
    df = _train_queries(analysis_dir)
    G = _num_generations(df)
    with theme():
        fig, axes = new_figure(panel=(5.5, 3.2))
        ax = axes[0, 0]
        ax.scatter(df["alpha"], df["delta_J"], s=10, alpha=0.5, color=PALETTE[0], label="ΔJ(q)")
        means = df.groupby("alpha")["delta_J"].mean()
        ax.plot(means.index, means.values, "o-", color=PALETTE[3], label="mean per α")
        co = df["co_influence"].abs().max() if df["co_influence"].notna().any() else 0.0
        if co and np.isfinite(co):
            a = np.linspace(0, 1, 101)
            shape = envelope(a, df)
            ax.fill_between(a, -co * shape, co * shape, color="grey", alpha=0.15, label="±max|co-influence|·w(α)")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("rollout accuracy α")
        ax.set_ylabel("ΔJ per unit step")
        ticks = np.arange(G + 1) / G if G <= 8 else np.linspace(0, 1, 5)
        ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def alpha_shares(analysis_dir) -> pd.Series:
    """Share of one analysis's train queries at each α = k/G, k = 0..G (index: α)."""
    df = _train_queries(analysis_dir)
    G = _num_generations(df)
    counts = np.bincount(df["n_correct"].astype(int), minlength=G + 1)
    return pd.Series(counts / max(len(df), 1), index=np.round(np.arange(G + 1) / G, 6), name=str(analysis_dir))


def alpha_histograms(analysis_dirs, out_path=None) -> Figure:
    """One panel per variant, in rows of at most four: share of train queries at each α (mean over
    the variant's analyses, error bar ±1 s.d. when there are several), the informative region
    0<α<1 shaded, and the informative share in the title. Meant for the analyses of SFT
    checkpoints (Fig. 1 middle)."""
    groups = group_analyses(analysis_dirs)
    colors = variant_colors(groups)
    with theme():
        fig, axes = panel_grid(len(groups), panel=(2.5, 2.4), sharey=True)
        for ax, (label, dirs) in zip(axes, groups.items()):
            table = pd.concat([alpha_shares(d) for d in dirs], axis=1).fillna(0.0)
            mean, std = table.mean(axis=1), table.std(axis=1, ddof=1) if table.shape[1] > 1 else None
            G = len(table) - 1
            ax.axvspan(0.5 / G, 1 - 0.5 / G, color="grey", alpha=0.12, lw=0, label=INFORMATIVE_LABEL)
            ax.bar(table.index, mean, width=0.7 / G, color=colors[label], yerr=std, capsize=2,
                   error_kw={"lw": 0.8}, label="share of queries (error bar ±1 s.d.)")
            informative = mean[(mean.index > 0) & (mean.index < 1)].sum()
            ax.set_title(f"{label}\nn={len(dirs)}, {informative:.0%} informative")
            ax.set_xlabel("rollout accuracy α")
            _alpha_ticks(ax, G)
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("share of training queries")
        if groups:
            figure_legend(fig, *axes[0].get_legend_handles_labels())
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def _alpha_ticks(ax, G: int) -> None:
    """Every α = k/G labelled when that fits a narrow panel (G ≤ 4), else quarters."""
    ticks = np.arange(G + 1) / G if G <= 4 else np.linspace(0, 1, 5)
    ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])


def delta_J_per_alpha(queries: pd.DataFrame) -> pd.DataFrame:
    """Mean ΔJ per α value with its standard error and query count (index: α)."""
    g = queries.assign(alpha=queries["alpha"].round(6)).groupby("alpha")["delta_J"]
    out = pd.DataFrame({"mean": g.mean(), "sem": g.sem(ddof=1), "n": g.count()})
    out["sem"] = out["sem"].fillna(0.0)
    return out


def influence_by_alpha(analysis_dirs, out_path=None) -> Figure:
    """Left: mean ΔJ per α bin per variant (error bar ±1 s.e. over queries, pooled over the
    variant's analyses) with the envelope ``mean co-influence × w(α)`` (w = √(α(1−α)) up to the
    std convention): what ΔJ would be if co-influence did not depend on α. Right: mean
    co-influence of each variant over its informative queries (±1 s.e.), dots per analysis."""
    groups = group_analyses(analysis_dirs)
    colors = variant_colors(groups)
    pooled = {label: pd.concat([_train_queries(d) for d in dirs], ignore_index=True) for label, dirs in groups.items()}
    with theme():
        fig, axes = new_figure(2, panel=(4.6, 3.2), gridspec_kw={"width_ratios": [3, 2]})
        left, right = axes[0]
        a = np.linspace(0, 1, 201)
        for i, (label, df) in enumerate(pooled.items()):
            stats = delta_J_per_alpha(df)
            shift = (i - (len(groups) - 1) / 2) * 0.02 if len(groups) > 1 else 0.0
            left.errorbar(stats.index.to_numpy() + shift, stats["mean"].to_numpy(), yerr=stats["sem"].to_numpy(), fmt="o", ms=4, capsize=2,
                          color=colors[label], label=label)
            co = df.loc[_informative(df), "co_influence"].mean()
            if np.isfinite(co):
                left.plot(a, co * envelope(a, df), "--", lw=1, color=colors[label])
        left.axhline(0, color="black", lw=0.5)
        left.set_xlabel("rollout accuracy α of the training query")
        left.set_ylabel("ΔJ per unit step")
        left.set_title("per-step influence ΔJ by α (mean ±1 s.e.)")

        labels = list(pooled)
        for y, label in enumerate(labels):
            df = pooled[label]
            co = df.loc[_informative(df), "co_influence"].dropna()
            sem = co.sem(ddof=1) if len(co) > 1 else 0.0
            right.barh(y, co.mean() if len(co) else np.nan, xerr=sem, color=colors[label], capsize=3, height=0.6)
            per_run = [_train_queries(d) for d in groups[label]]
            dots = [q.loc[_informative(q), "co_influence"].mean() for q in per_run]
            if len(dots) > 1:
                right.plot(dots, [y] * len(dots), "o", ms=3, color="black", alpha=0.7)
        right.axvline(0, color="black", lw=0.5)
        right.set_ylim(max(len(labels), 2) - 0.25, -0.75)  # first variant on top; one bar does not fill the panel
        right.set_yticks(range(len(labels)), labels)
        right.set_xlabel("co-influence E[A·(K⁺−K⁻)]")
        right.set_title("mean co-influence\n(informative queries)")
        for ax in (left, right):
            ax.ticklabel_format(axis="x" if ax is right else "y", style="sci", scilimits=(-2, 3))
        handles, names = left.get_legend_handles_labels()
        handles.append(Line2D([], [], ls="--", lw=1, color="grey"))
        names.append("mean co-influence × √(α(1−α))")
        figure_legend(fig, handles, names)
        if out_path is not None:
            save_figure(fig, out_path)
    return fig


def _timeseries_label(path) -> str:
    """Variant of the run a timeseries belongs to (given RUN, RUN/analysis or the csv itself)."""
    path = Path(path)
    if is_run_dir(path):
        return run_label(path)
    run = run_of_analysis(path.parent if path.is_file() else path)
    return run_label(run) if run is not None else path.name


# (column, panel title, y label)
TIMESERIES = (
    ("mean_co_influence", "mean co-influence\n(informative queries)", "co-influence"),
    ("mean_delta_J", "mean ΔJ", "ΔJ per unit step"),
    ("frac_informative", "share of informative queries", "share with 0<α<1"),
)


def influence_through_training(paths, out_path=None, columns=TIMESERIES) -> Figure:
    """Co-influence, ΔJ and the informative share at each analysed checkpoint (step 0 = SFT),
    from timeseries.csv (``analyze --run RUN --all-checkpoints``; pass RUN, RUN/analysis or the
    file). Runs of one variant: mean over seeds, band ±1 s.d."""
    from coinfluence.plots.training import seed_mean

    by_label: dict[str, list[pd.DataFrame]] = {}
    for p in paths:
        by_label.setdefault(_timeseries_label(p), []).append(read_timeseries(p))
    labels = order_variants(by_label)
    colors = variant_colors(labels)
    with theme():
        fig, axes = panel_grid(len(columns), panel=(3.3, 2.6))
        for ax, (column, title, ylabel) in zip(axes, columns):
            for label in labels:
                series = [ts.set_index("step")[column].astype(float) for ts in by_label[label]]
                stats = seed_mean(series).dropna(subset=["mean"])
                n = len(series)
                ax.plot(stats.index, stats["mean"], "o-", ms=3, color=colors[label], label=f"{label} ({n} seed{'s' * (n > 1)})")
                band = stats.dropna(subset=["std"])
                if len(band):
                    ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"], color=colors[label], alpha=0.2, lw=0)
            if column != "frac_informative":
                ax.axhline(0, color="black", lw=0.5)
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            else:
                ax.set_ylim(-0.02, 1.02)
            ax.set_title(title)
            ax.set_xlabel("GRPO step (0 = SFT)")
            ax.set_ylabel(ylabel)
        figure_legend(fig, *unique_legend_entries(axes))
        if out_path is not None:
            save_figure(fig, out_path)
    return fig
