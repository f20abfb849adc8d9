"""Figures from the files ``coinfluence analyze`` wrote (never from a live model).

- :func:`alpha_histogram`: how the train queries' rollout accuracy α is spread.
- :func:`delta_J_by_alpha`: ΔJ per train query against α, the mean per α bin, and the
  envelope ``±max|co_influence|·weight(α)`` — ΔJ = weight·co_influence, so the α-dependent
  factor bounds what any query can contribute.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _train_queries(analysis_dir) -> pd.DataFrame:
    df = pd.read_parquet(Path(analysis_dir) / "queries.parquet")
    return df[df["role"] == "train"]


def _save(fig, out_path) -> Path:
    from coinfluence.io import atomic_path

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out_path


def envelope(a: np.ndarray, df: pd.DataFrame) -> np.ndarray:
    """weight(α) on a grid: ``c·√(α(1−α))`` (group scaling; c = 1, or √((G−1)/G) for the
    unbiased std, read off the saved weights) or ``α(1−α)`` (no scaling)."""
    inf = df[df["alpha"].between(0, 1, inclusive="neither")]
    if not len(inf):
        return np.sqrt(a * (1 - a))
    ratio = inf["weight"] / np.sqrt(inf["alpha"] * (1 - inf["alpha"]))
    if np.allclose(ratio, ratio.iloc[0], rtol=1e-6):
        return float(ratio.iloc[0]) * np.sqrt(a * (1 - a))
    return a * (1 - a)


def alpha_histogram(analysis_dir, out_path=None) -> Path:
    df = _train_queries(analysis_dir)
    G = int(df["num_generations"].iloc[0]) if len(df) else 1
    counts = np.bincount(df["n_correct"].astype(int), minlength=G + 1)
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.bar(np.arange(G + 1) / G, counts, width=0.8 / G, color="#4c72b0")
    ax.set_xlabel("rollout accuracy α")
    ax.set_ylabel("train queries")
    informative = df["alpha"].between(0, 1, inclusive="neither").mean() if len(df) else 0.0
    ax.set_title(f"α per query (informative 0<α<1: {informative:.0%})", fontsize=9)
    return _save(fig, out_path or Path(analysis_dir) / "figures" / "alpha_hist.png")


def delta_J_by_alpha(analysis_dir, out_path=None) -> Path:
    df = _train_queries(analysis_dir)
    G = int(df["num_generations"].iloc[0]) if len(df) else 1
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.scatter(df["alpha"], df["delta_J"], s=10, alpha=0.5, color="#4c72b0", label="ΔJ(q)")
    means = df.groupby("alpha")["delta_J"].mean()
    ax.plot(means.index, means.values, "o-", color="#c44e52", label="mean per α")
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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, out_path or Path(analysis_dir) / "figures" / "delta_J_by_alpha.png")
