"""The paper's claims as comparisons over seeds, each with a bootstrap interval and a verdict.

A *unit* is one (variant, seed) run; a claim compares a per-unit number (an RL gain, the
informative share at SFT, ...) between two variants. Units of different variants with the same
seed share their problems (the data generator pairs them), so a comparison is paired by seed
when both variants have that seed, and the interval resamples seeds. The decision rule, fixed
before the runs: a difference counts when its 95% bootstrap interval excludes 0; the verdict is
``reproduced`` when it excludes 0 on the paper's side, ``opposite`` on the other side, and
``not reproduced`` when it contains 0.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000


def bootstrap_interval(values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of ``values`` and the percentile interval of the mean over
    ``resamples`` resamples with replacement (NaN interval for fewer than two values)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def difference_interval(a: dict, b: dict, **kw) -> tuple[float, float, float, int]:
    """``(mean, lo, hi, n)`` of ``a − b`` for per-seed values ``{seed: value}``: paired over the
    seeds both have (``n`` of them) when there are at least two, else the difference of two
    independent bootstrap means over all seeds of each (``n`` = 0)."""
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        mean, lo, hi = bootstrap_interval([a[s] - b[s] for s in shared], **kw)
        return mean, lo, hi, len(shared)
    xa, xb = np.asarray(list(a.values()), float), np.asarray(list(b.values()), float)
    if len(xa) < 2 or len(xb) < 2:
        return (float(xa.mean() - xb.mean()) if len(xa) and len(xb) else float("nan")), float("nan"), float("nan"), 0
    level, resamples, seed = kw.get("level", LEVEL), kw.get("resamples", RESAMPLES), kw.get("seed", 0)
    rng = np.random.default_rng(seed)
    diffs = (xa[rng.integers(0, len(xa), (resamples, len(xa)))].mean(1)
             - xb[rng.integers(0, len(xb), (resamples, len(xb)))].mean(1))
    tail = (1 - level) / 2
    return float(xa.mean() - xb.mean()), float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail)), 0


def verdict(lo: float, hi: float, expected_sign: int = 1) -> str:
    """The decision rule (module docstring) for an interval ``[lo, hi]`` of a difference that the
    paper says is positive (``expected_sign`` 1) or negative (-1)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "too few seeds"
    if lo > 0 or hi < 0:
        return "reproduced" if (lo > 0) == (expected_sign > 0) else "opposite"
    return "not reproduced"
