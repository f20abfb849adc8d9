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
    (-0.05, -0.01, -1, "reproduced"), (float("nan"), float("nan"), 1, "too few seeds")])
def test_verdicts(lo, hi, sign, expected):
    assert verdict(lo, hi, sign) == expected
