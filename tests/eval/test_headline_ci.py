"""The headline's paired item bootstrap, on hand-made items whose answers are known."""

import pytest

from depmask.eval.headline import headline
from depmask.eval.headline_ci import headline_intervals, intervals_table
from depmask.eval.summary import summarize


def _item(i: int, nfe: int, correct: bool = True, probe: int = 0, committed: int = 16) -> dict:
    return {"id": f"t:{i}", "correct": correct, "nfe": nfe, "probe_nfe": probe, "tpf": committed / nfe,
            "afp": committed / (nfe - probe), "kendall_tau": 0.0, "committed": committed, "seconds": 0.01}


def _runs(n: int = 40):
    """Items vary in difficulty (1–4 forwards); `demask` is the threshold run, one forward faster on
    every fourth item; the oracle is faster still but pays probes."""
    hard = [1 + i % 4 for i in range(n)]
    runs = {
        ("low_confidence", ()): [_item(i, 16) for i in range(n)],
        ("threshold", (("threshold", 0.9),)): [_item(i, h + 1) for i, h in enumerate(hard)],
        ("threshold", (("threshold", 0.5),)): [_item(i, h, correct=i % 2 == 0) for i, h in enumerate(hard)],
        ("demask", (("epsilon", 0.5),)): [_item(i, h + (i % 4 != 0)) for i, h in enumerate(hard)],
        ("oracle", (("epsilon", 1.0),)): [_item(i, h + 6, probe=6) for i, h in enumerate(hard)],
    }
    rows = [summarize("sudoku4", p, dict(k), it) for (p, k), it in runs.items()]
    return rows, list(runs.values())


@pytest.mark.parametrize("measure", ["tpf", "tpf_pooled"])
def test_point_values_are_the_headline_and_intervals_contain_them(measure):
    rows, items = _runs()
    ci = {r["policy"]: r for r in headline_intervals(rows, items, measure=measure, n_boot=300)}
    top = {r["policy"]: r for r in headline(rows, measure=measure)}
    for policy, r in ci.items():
        expected = top[policy]["decode_tpf"] if top[policy]["probing"] else top[policy]["tpf"]
        assert r["tpf"] == pytest.approx(expected), policy
        assert r["tpf_lo"] <= r["tpf"] + 1e-9 and r["tpf"] <= r["tpf_hi"] + 1e-9, policy
    assert ci["threshold"]["tpf_hi"] > ci["threshold"]["tpf_lo"]  # items differ: the draw matters
    assert ci["low_confidence"]["tpf_lo"] == ci["low_confidence"]["tpf_hi"] == 1.0  # 16 forwards always
    # by hand, pooled: threshold 640 / 140, demask 640 / 130, oracle (decoding forwards) 640 / 100
    if measure == "tpf_pooled":
        best, guided, oracle = 640 / 140, 640 / 130, 640 / 100
        assert ci["demask"]["share"] == pytest.approx((guided - best) / (oracle - best))
        assert 0 < ci["demask"]["share_lo"] < ci["demask"]["share"] < ci["demask"]["share_hi"] < 1
    assert "share" not in ci["threshold"] and "share" not in ci["oracle"]  # baselines and oracle: none


def test_resampling_is_paired_across_runs():
    """A policy whose items are the best baseline's closes exactly 0 of the headroom in every
    replicate; resampling runs independently would spread it."""
    rows, items = _runs()
    keep = [k for k, r in enumerate(rows) if r["policy"] != "demask"]
    rows = [rows[k] for k in keep] + [summarize("sudoku4", "demask", {"epsilon": 0.1}, items[1])]
    items = [items[k] for k in keep] + [items[1]]  # items[1]: the threshold 0.9 run
    ci = {r["policy"]: r for r in headline_intervals(rows, items, measure="tpf_pooled", n_boot=200)}
    assert ci["demask"]["share"] == ci["demask"]["share_lo"] == ci["demask"]["share_hi"] == 0.0
    assert ci["demask"]["share_n"] == 200


def test_same_seed_same_intervals_and_the_table_prints_them():
    rows, items = _runs()
    a = headline_intervals(rows, items, n_boot=100, seed=3)
    assert a == headline_intervals(rows, items, n_boot=100, seed=3)
    text = intervals_table(a)
    assert "95% bootstrap intervals" in text and "share" in text.splitlines()[-2]


def test_bad_input_is_named():
    rows, items = _runs()
    with pytest.raises(ValueError, match=r"`items` has 4 runs but `rows` has 5"):
        headline_intervals(rows, items[:-1])
    with pytest.raises(ValueError, match=r"`measure` \('nfe'\) must be one of"):
        headline_intervals(rows, items, measure="nfe")
    with pytest.raises(ValueError, match=r"`level` \(1.5\) must lie in \(0, 1\)"):
        headline_intervals(rows, items, level=1.5)
    shifted = [*items[:-1], [{**x, "id": f"u:{k}"} for k, x in enumerate(items[-1])]]
    with pytest.raises(ValueError, match="must cover the same items"):
        headline_intervals(rows, shifted)


def test_each_window_is_bootstrapped_on_the_same_draws():
    rows, items = _runs()
    # at 50 points the 50 %-accurate threshold 0.5 run qualifies and becomes the best baseline
    wide = {r["policy"]: r for r in headline_intervals(rows, items, tolerance=0.5, measure="tpf_pooled", n_boot=200)}
    one = {r["policy"]: r for r in headline_intervals(rows, items, measure="tpf_pooled", n_boot=200)}
    point = {r["policy"]: r for r in headline(rows, tolerance=0.5, measure="tpf_pooled")}
    assert wide["threshold"]["tpf"] == pytest.approx(point["threshold"]["tpf"]) == pytest.approx(640 / 100)
    assert one["threshold"]["tpf"] == pytest.approx(640 / 140)
    assert {r["tolerance"] for r in wide.values()} == {0.5}
    assert "(50 points)" in intervals_table(list(wide.values()))
    # the same seed draws the same resamples at every window: demask's interval does not move
    assert (wide["demask"]["tpf_lo"], wide["demask"]["tpf_hi"]) == (one["demask"]["tpf_lo"], one["demask"]["tpf_hi"])
    with pytest.raises(ValueError, match=r"accuracy window `tolerance` \(-0.1\)"):
        headline_intervals(rows, items, tolerance=-0.1)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_equal_values_choose_the_more_accurate_run_whatever_the_sweep_order(order):
    """Two qualifying runs at the same TPF (low thresholds that all finish in one forward): the
    headline reported whichever the sweep listed first, so its knob and accuracy followed the order."""
    n = 100
    runs = [(("low_confidence", {}), [_item(i, 16) for i in range(n)])]
    sweep = [(("threshold", {"threshold": 0.5}), [_item(i, 1, correct=i != 0) for i in range(n)]),
             (("threshold", {"threshold": 0.7}), [_item(i, 1) for i in range(n)])]
    runs += [sweep[k] for k in order]
    rows = [summarize("sudoku4", p, k, it) for (p, k), it in runs]
    items = [it for _, it in runs]
    top = next(r for r in headline(rows, measure="tpf") if r["policy"] == "threshold")
    assert (top["knobs"], top["accuracy"]) == ("threshold=0.7", 1.0)
    # the bootstrap's point value is the same choice (its accuracy column is the chosen run's)
    ci = next(r for r in headline_intervals(rows, items, measure="tpf", n_boot=20) if r["policy"] == "threshold")
    assert ci["tpf"] == 16.0


def test_the_table_says_when_an_interval_rests_on_some_resamples_only():
    """A run at the edge of the window qualifies in some replicates only, and its interval is over
    those; the table printed it like any other, so it could look tight and sure."""
    rows, items = _runs()
    edge = [dict(x, correct=x["id"] != "t:0") for x in items[3]]  # demask with one item wrong: 2.5 points
    k = [r["policy"] for r in rows].index("demask")
    rows[k], items[k] = summarize("sudoku4", "demask", {"epsilon": 0.5}, edge), edge
    ci = {r["policy"]: r for r in headline_intervals(rows, items, tolerance=0.03, measure="tpf_pooled", n_boot=400)}
    assert 0.6 < ci["demask"]["tpf_n"] / 400 < 0.9  # P(t:0 drawn at most once) = 0.74
    text = {line.split()[1]: line for line in intervals_table(list(ci.values())).splitlines()[1:]}
    assert f"(in {ci['demask']['tpf_n']} of 400 resamples)" in text["demask"]
    assert f"(in {ci['demask']['share_n']} of 400 resamples)" in text["demask"]
    assert "resamples)" not in text["low_confidence"] and "resamples)" not in text["threshold"]
