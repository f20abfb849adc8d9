"""Shared look of every figure: one theme, one colour per variant, PNG + PDF saved atomically.

Figures are built as bare :class:`matplotlib.figure.Figure` objects, not through pyplot, so
that drawing many of them (one per checkpoint in ``analyze --all-checkpoints``) leaks nothing
and the library never changes the caller's matplotlib backend.
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import matplotlib
import seaborn as sns
from matplotlib.figure import Figure

# seaborn's colour-blind-safe palette (10 colours).
PALETTE = sns.color_palette("colorblind")

# Every variant a run's data options select, by key (``behaviours``, or the augmentation baseline
# of plain data), with the name every figure, table and report shows; known variants keep their
# colour whichever others are drawn beside them.
VARIANT_NAMES = {"none": "vanilla", "both": "BRIDGE", "explore": "explore only", "exploit": "exploit only",
                 "question_aug": "question aug.", "answer_aug": "answer aug."}
VARIANT_ORDER = tuple(VARIANT_NAMES.values())
# Each known variant's colour: the six of the palette farthest apart from one another (at least
# 36 CIELAB units; the palette's vermillion sits 26 from its orange, so BRIDGE and exploit only
# do not share that pair), the baselines in grey and brown.
VARIANT_COLORS = dict(zip(VARIANT_ORDER, (PALETTE[i] for i in (0, 1, 2, 4, 7, 5))))
# Colours for any other label (e.g. "BRIDGE (p_explore=0.6)"), picked by a hash of the label;
# the palette's yellow (PALETTE[8]) is left out: too faint on white for lines and markers.
SPARE_COLORS = [c for c in PALETTE if c not in VARIANT_COLORS.values() and c != PALETTE[8]]

# Readable at page width: no figure is wider than this (inches; 1,500 px at savefig.dpi), and a
# grid of panels has at most this many columns.
PAGE_WIDTH = 10.0
MAX_COLUMNS = 4

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
    """A Figure with ``nrows × ncols`` panels of ``panel`` inches each (narrowed to fit
    :data:`PAGE_WIDTH`); returns (fig, axes array)."""
    width = min(panel[0] * ncols, PAGE_WIDTH)
    fig = Figure(figsize=(width, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def panel_grid(n: int, panel: tuple[float, float] = (3.2, 2.8), max_columns: int = MAX_COLUMNS, **kw):
    """``n`` panels in rows of at most ``max_columns`` (unused cells of the last row removed);
    returns (fig, list of n axes in reading order)."""
    n = max(n, 1)
    ncols = min(n, max_columns)
    fig, axes = new_figure(ncols, -(-n // ncols), panel, **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def figure_legend(fig: Figure, handles, labels, title: str | None = None, max_columns: int = 3) -> None:
    """One legend for all panels, below them: the constrained layout makes room for it, so it
    never covers a panel or an axis label."""
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), max_columns), title=title)


def unique_legend_entries(axes) -> tuple[list, list[str]]:
    """Legend handles and labels of several panels, each label once (first panel that has it)."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(name, handle)
    return list(entries.values()), list(entries)


def order_variants(labels: Iterable[str]) -> list[str]:
    """Known variants in :data:`VARIANT_ORDER`, then the others sorted by name."""
    labels = list(dict.fromkeys(labels))
    known = [v for v in VARIANT_ORDER if v in labels]
    return known + sorted(v for v in labels if v not in VARIANT_ORDER)


def two_lines(label: str) -> str:
    """A variant name broken at its first space, for tick labels under narrow bars."""
    return label.replace(" ", "\n", 1)


def variant_colors(labels: Iterable[str]) -> dict[str, tuple]:
    """Colour of each label: fixed for the known variants; any other label takes the spare colour
    its name hashes to, so that it keeps its colour from figure to figure (only when two such
    labels of one figure hash alike does the later one take the next free spare)."""
    labels = order_variants(labels)
    colors = {v: VARIANT_COLORS[v] for v in labels if v in VARIANT_COLORS}
    for v in labels:
        if v not in colors:
            first = zlib.crc32(v.encode("utf-8")) % len(SPARE_COLORS)
            ring = SPARE_COLORS[first:] + SPARE_COLORS[:first]
            taken = set(colors.values())
            colors[v] = next((c for c in ring if c not in taken), ring[0])
    return colors


def save_figure(fig: Figure, out_path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``out_path`` with each suffix in ``formats`` (atomically); returns the paths."""
    from coinfluence.io import atomic_path

    base = Path(out_path)
    written = []
    for fmt in formats:
        path = base.with_suffix(f".{fmt}")
        # no creation date in a PDF: a redrawn figure of the same units is the same file
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with atomic_path(path) as tmp, theme():
            fig.savefig(tmp, format=fmt, metadata=metadata)
        written.append(path)
    return written
