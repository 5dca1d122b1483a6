"""`heldout_intervals`: the held-out choice redone per replicate over both item sets."""

import numpy as np
import pytest

from depmask.eval.heldout import heldout_headline
from depmask.eval.heldout_ci import heldout_intervals, heldout_intervals_table
from depmask.eval.summary import summarize

RUNS = [("low_confidence", {}), ("threshold", {"threshold": 0.9}), ("threshold", {"threshold": 0.5}),
        ("demask", {"epsilon": 0.3}), ("demask", {"epsilon": 1.0}), ("oracle", {"epsilon": 1.0})]


def _items(prefix: str, n: int, p_correct: float, nfe: int, rng, probe: int = 0) -> list[dict]:
    return [{"id": f"{prefix}{i}", "correct": bool(rng.random() < p_correct), "nfe": nfe + probe,
             "probe_nfe": probe, "tpf": 16 / (nfe + probe), "afp": 16 / nfe, "committed": 16, "kendall_tau": 0.0,
             "seconds": 0.01} for i in range(n)]


def _sets(seed: int, accuracy: dict, n: int = 200):
    """Rows + items of every run on one item set; `accuracy[(policy, knob)]` per run."""
    rng = np.random.default_rng(seed)
    forwards = {"low_confidence": 16, "threshold": 4, "demask": 3, "oracle": 2}
    rows, items = [], []
    for policy, knobs in RUNS:
        knob = next(iter(knobs.values()), None)
        extra = 4 if knob in (0.5, 1.0) and policy != "oracle" else 0  # the aggressive knob: fewer forwards
        nfe = max(1, forwards[policy] - extra // 2)
        its = _items(f"s{seed}-", n, accuracy.get((policy, knob), 1.0), nfe, rng, probe=6 if policy == "oracle" else 0)
        rows.append({**summarize("sudoku4", policy, knobs, its)})
        items.append(its)
    return rows, items


def test_point_values_are_the_held_out_headline_and_intervals_cover_them():
    acc = {("threshold", 0.5): 0.97, ("demask", 1.0): 0.985}
    sel_rows, sel_items = _sets(1, acc)
    rows, items = _sets(2, acc)
    ci = heldout_intervals(sel_rows, sel_items, rows, items, tolerance=0.01, measure="tpf_pooled", n_boot=300)
    point = {r["policy"]: r for r in heldout_headline(sel_rows, rows, tolerance=0.01, measure="tpf_pooled")}
    for r in ci:
        p = point[r["policy"]]
        want = p["decode_tpf"] if p["probing"] else p["tpf"]
        assert r["tpf"] == pytest.approx(want) and r["within"] == p["within"]
        assert r["tpf_lo"] <= r["tpf"] + 1e-9 and r["tpf"] <= r["tpf_hi"] + 1e-9 or not r["within"]
        assert 0 <= r["within_rate"] <= 1
    by = {r["policy"]: r for r in ci}
    assert by["low_confidence"]["within_rate"] == 1.0 and "share" in by["demask"] and "share" not in by["threshold"]
    text = heldout_intervals_table(ci)
    assert "stays in window" in text and "demask" in text


def test_a_knob_that_always_fails_on_the_evaluation_items_never_stays_in_the_window():
    # demask ε 1 is perfect on the held-out set, so it is always chosen there; it is 80 % on the evaluation set
    sel_rows, sel_items = _sets(1, {})
    rows, items = _sets(2, {("demask", 1.0): 0.8})
    by = {r["policy"]: r for r in heldout_intervals(sel_rows, sel_items, rows, items, n_boot=200)}
    assert by["demask"]["within_rate"] == 0.0 and by["demask"]["within"] is False
    assert by["demask"]["share"] is None and by["demask"]["share_n"] == 0
    assert by["threshold"]["within_rate"] == 1.0


def test_every_run_perfect_gives_a_fixed_choice_and_share():
    sel_rows, sel_items = _sets(1, {})
    rows, items = _sets(2, {})
    by = {r["policy"]: r for r in heldout_intervals(sel_rows, sel_items, rows, items, n_boot=100)}
    # threshold 0.5: 16 / 2 = 8 per forward; demask ε 1: 16; oracle decoding: 16 / 2 = 8 — no headroom
    assert by["demask"]["within_rate"] == 1.0 and by["demask"]["tpf_lo"] == by["demask"]["tpf_hi"]


def test_mismatched_runs_and_bad_arguments_are_named():
    sel_rows, sel_items = _sets(1, {})
    rows, items = _sets(2, {})
    with pytest.raises(ValueError, match="must hold the same runs"):
        heldout_intervals(sel_rows[:-1], sel_items[:-1], rows, items)
    with pytest.raises(ValueError, match="`items` has 5 runs but its rows have 6"):
        heldout_intervals(sel_rows, sel_items, rows, items[:-1])
    with pytest.raises(ValueError, match="`measure`"):
        heldout_intervals(sel_rows, sel_items, rows, items, measure="speed")
    with pytest.raises(ValueError, match="`n_boot`"):
        heldout_intervals(sel_rows, sel_items, rows, items, n_boot=0)


@pytest.mark.parametrize("flip", [False, True])
def test_equal_values_on_the_held_out_items_choose_the_more_accurate_run(flip):
    """At equal held-out TPF the more accurate run is scored on the evaluation items, whatever the
    sweep order (it was the first listed: here the one that fails on the evaluation items)."""
    rng = np.random.default_rng(0)
    runs = [("low_confidence", {}, 16, 1.0, 1.0), ("threshold", {"threshold": 0.5}, 1, 0.995, 0.5),
            ("threshold", {"threshold": 0.7}, 1, 1.0, 1.0)]
    if flip:
        runs[1], runs[2] = runs[2], runs[1]
    sides = []
    for side in ("s", "e"):
        rows, items = [], []
        for policy, knobs, nfe, p_sel, p_ev in runs:
            its = _items(side, 200, p_sel if side == "s" else p_ev, nfe, rng)
            if side == "s" and p_sel < 1:
                for x in its:
                    x["correct"] = int(x["id"][1:]) >= 8  # 192 / 200: inside a 5-point window
            rows.append(summarize("sudoku4", policy, knobs, its))
            items.append(its)
        sides.append((rows, items))
    (sel_rows, sel_items), (rows, items) = sides
    point = next(r for r in heldout_headline(sel_rows, rows, tolerance=0.05) if r["policy"] == "threshold")
    assert point["knobs"] == "threshold=0.7" and point["within"] is True
    by = {r["policy"]: r for r in heldout_intervals(sel_rows, sel_items, rows, items, tolerance=0.05, n_boot=50)}
    assert by["threshold"]["within_rate"] == 1.0
