"""Shared look of every figure: one theme, one colour per variant, PNG + PDF saved atomically.

Figures are built as bare :class:`matplotlib.figure.Figure` objects, not through pyplot, so
that drawing many of them (one per checkpoint in ``analyze --all-checkpoints``) leaks nothing
and the library never changes the caller's matplotlib backend.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import matplotlib
import seaborn as sns
from matplotlib.figure import Figure

# seaborn's colour-blind-safe palette (10 colours).
PALETTE = sns.color_palette("colorblind")

# Known variants keep their colour in every figure, whichever others are drawn beside them.
VARIANT_ORDER = ("vanilla", "BRIDGE", "explore only", "exploit only", "question aug.", "answer aug.")

RC = {
    **sns.axes_style("whitegrid"),
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
}


@contextmanager
def theme() -> Iterator[None]:
    """The rcParams of every figure, active while it is drawn and saved (the caller's are restored)."""
    with matplotlib.rc_context(RC):
        yield


def new_figure(ncols: int = 1, nrows: int = 1, panel: tuple[float, float] = (4.0, 3.0), **kw):
    """A Figure with ``nrows × ncols`` panels of ``panel`` inches each; returns (fig, axes array)."""
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def order_variants(labels: Iterable[str]) -> list[str]:
    """Known variants in :data:`VARIANT_ORDER`, then the others sorted by name."""
    labels = list(dict.fromkeys(labels))
    known = [v for v in VARIANT_ORDER if v in labels]
    return known + sorted(v for v in labels if v not in VARIANT_ORDER)


def variant_colors(labels: Iterable[str]) -> dict[str, tuple]:
    """Colour of each label: fixed for the known variants, the unused palette colours for the rest."""
    labels = order_variants(labels)
    colors = {v: PALETTE[i] for i, v in enumerate(VARIANT_ORDER) if v in labels}
    spare = iter(PALETTE[len(VARIANT_ORDER):] + PALETTE[: len(VARIANT_ORDER)])
    for v in labels:
        if v not in colors:
            colors[v] = next(spare)
    return colors


def save_figure(fig: Figure, out_path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``out_path`` with each suffix in ``formats`` (atomically); returns the paths."""
    from coinfluence.io import atomic_path

    base = Path(out_path)
    written = []
    for fmt in formats:
        path = base.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp, theme():
            fig.savefig(tmp, format=fmt)
        written.append(path)
    return written
