"""A summary row's figures checked against their formulas: the Wilson interval and tokens per second."""

import math

import pytest
from scipy.stats import binomtest

from depmask.eval.summary import summarize, wilson_interval


def test_wilson_interval_matches_the_formula_to_four_decimals():
    """Without the division by 1 + z²/n the half-width was too wide: 20 / 20 gave a lower end of 0.8234."""
    z2 = 1.959964**2
    # closed forms: at 0 / n the upper end is z² / (n + z²); at n / n the lower end is n / (n + z²)
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), abs=1e-9)
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=5e-5)
    assert wilson_interval(20, 20) == pytest.approx((20 / (20 + z2), 1.0), abs=1e-9)
    assert wilson_interval(20, 20)[0] == pytest.approx(0.8389, abs=5e-5)
    # at p = ½ the centre is ½ and the half-width z·√(1/(4n) + z²/(4n²)) / (1 + z²/n)
    half = math.sqrt(z2) * math.sqrt(1 / 400 + z2 / 40000) / (1 + z2 / 100)
    assert wilson_interval(50, 100) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-9)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=5e-5)
    for k, n in [(3, 10), (50, 100), (97, 100), (1, 7)]:  # scipy's Wilson interval, an independent one
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-6), (k, n)


def test_tokens_per_second_is_all_committed_tokens_over_all_seconds():
    """`tokens_per_s` divided the item count by the seconds: items per second, labelled tok/s."""
    items = [{"correct": True, "nfe": 2, "probe_nfe": 0, "tpf": 8.0, "afp": 8.0, "kendall_tau": 0.0,
              "committed": 16, "seconds": 0.5},
             {"correct": False, "nfe": 4, "probe_nfe": 0, "tpf": 2.0, "afp": 2.0, "kendall_tau": 0.0,
              "committed": 8, "seconds": 1.5}]
    row = summarize("t", "p", {}, items)
    assert row["tokens_per_s"] == pytest.approx((16 + 8) / (0.5 + 1.5)) and row["seconds"] == 2.0
    assert math.isnan(summarize("t", "p", {}, [{**items[0], "seconds": 0.0}])["tokens_per_s"])
