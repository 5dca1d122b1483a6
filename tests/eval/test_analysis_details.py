"""Details of the analysis code that the other eval tests leave open, each value derived by hand:
degenerate metric inputs, bin edges, JSON of undefined values, knob texts, the bootstraps' choice
with several reference runs and at the window's edge, the headroom share, prefix decisions at
exact ties, and the sub-additivity estimates' error bars and bookkeeping."""

import json
import math

import numpy as np
import pytest
import torch

from depmask.decoding.state import StepState
from depmask.eval.draws import check_items, item_digest
from depmask.eval.headline import headline, headline_table
from depmask.eval.headline_ci import (
    check_bootstrap,
    headline_intervals,
    headroom_shares,
    intervals_table,
    percentile_interval,
)
from depmask.eval.heldout import heldout_headline
from depmask.eval.heldout_ci import heldout_intervals
from depmask.eval.predictor_quality import reliability_bins, score_metrics
from depmask.eval.prefix_decisions import decision_table, prefix_costs
from depmask.eval.subadditivity import SetProbe, enumerated_tv, sampled_tv
from depmask.eval.summary import knob_text, plain, policy_width, run_key, summarize, to_json
from depmask.tasks.base import Example
from tests.eval.copy_denoiser import MASK, P0, Commit, CopyDenoiser, _inputs


def _item(i: int, nfe: int, correct: bool = True, probe: int = 0, committed: int = 16) -> dict:
    return {"id": f"t:{i}", "correct": correct, "nfe": nfe, "probe_nfe": probe, "tpf": committed / nfe,
            "afp": committed / (nfe - probe), "kendall_tau": 0.0, "committed": committed, "seconds": 0.01}


def _run(policy: str, knobs: dict, n: int, n_correct: int, nfe: int) -> tuple[dict, list[dict]]:
    """A run of task `sudoku4` on items t:0..t:n−1, the first `n_correct` of them right."""
    items = [_item(i, nfe, correct=i < n_correct) for i in range(n)]
    return summarize("sudoku4", policy, knobs, items), items


# ---------------------------------------------------------------- predictor quality


def test_pairs_that_are_all_positive_give_no_auroc_or_ap():
    """One class only is undefined whichever class it is (all negative is checked elsewhere)."""
    out = score_metrics(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.6, 0.7]), np.zeros(3))
    assert out["auroc"] is None and out["ap"] is None and out["n_positive"] == 3


def test_reliability_bins_are_closed_below_and_the_last_holds_one():
    """A prediction exactly on an inner edge belongs to the bin that starts there ([lo, hi))."""
    bins = reliability_bins(np.array([0.5, 0.2, 1.0]), np.array([0.4, 0.1, 0.8]), bins=2)
    assert [(b["lo"], b["n"]) for b in bins] == [(0.0, 1), (0.5, 2)]
    assert bins[1]["mean_pred"] == pytest.approx(0.75) and bins[1]["mean_tv"] == pytest.approx(0.6)


def test_a_state_array_of_another_length_is_refused():
    with pytest.raises(ValueError, match=r"`state` \(\(2,\)\) must have the shape of `tv`"):
        score_metrics(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, 1.0]), np.zeros(2))


# ---------------------------------------------------------------- draws and summary rows


def test_rows_without_a_digest_or_outside_the_draw_are_not_checked(tmp_path):
    """Rows written before the digest was kept (no `item`) and rows of ids not in the draw pass."""
    ex = Example(id="t:test:0:0", task="t", prompt="2 + 2 ?", answer="4")
    rows = [{"id": ex.id, "completion": "4", "correct": True},
            {"id": "t:test:0:9", "item": "0" * 16, "completion": "1", "correct": False}]
    check_items(tmp_path / "r.jsonl", rows, [ex])
    with pytest.raises(ValueError, match="1 item"):
        check_items(tmp_path / "r.jsonl", [*rows, {"id": ex.id, "item": "0" * 16}], [ex])
    assert item_digest(ex) != "0" * 16


def test_json_of_undefined_values_is_null_through_tuples_and_infinities():
    assert plain((1.0, math.nan)) == [1.0, None] and plain({"a": [math.inf, -math.inf]}) == {"a": [None, None]}
    assert json.loads(to_json([{"tpf": math.inf, "ci": (0.5, math.nan)}])) == [{"tpf": None, "ci": [0.5, None]}]


def test_knob_text_leaves_out_the_head_and_run_key_the_compile_mode():
    row = {"task": "t", "policy": "demask", "head": "/ckpt/a", "epsilon": 0.3, "accuracy": 1.0,
           "compile_select": "jit"}
    assert knob_text(row) == "epsilon=0.3"
    eager = {k: v for k, v in row.items() if k != "compile_select"}
    assert run_key(row) == run_key(eager)  # how it was decoded is not which run it is
    assert run_key(row) != run_key({**row, "head": "/ckpt/b"})


def test_means_skip_nan_and_items_without_probes_count_zero_probe_forwards():
    items = [{"correct": True, "nfe": 2, "tpf": 8.0, "afp": 8.0, "kendall_tau": math.nan, "committed": 16,
              "seconds": 0.5},
             {"correct": False, "nfe": 4, "tpf": 4.0, "afp": 4.0, "kendall_tau": 0.5, "committed": 16,
              "seconds": 0.5}]
    row = summarize("t", "p", {}, items)
    assert row["kendall_tau"] == pytest.approx(0.5) and row["probe_nfe"] == 0
    assert row["decode_tpf_pooled"] == row["tpf_pooled"] == pytest.approx(32 / 6)


def test_policy_column_widens_to_the_longest_name():
    assert policy_width([{"policy": "p"}]) == 15 and policy_width([{"policy": "x" * 20}, {"policy": "y"}]) == 20


# ---------------------------------------------------------------- headline


def _hrow(policy, accuracy, tpf, decode=None, probe=0, **knobs):
    decode = tpf if decode is None else decode
    return {"task": "t", "policy": policy, **knobs, "accuracy": accuracy, "tpf": tpf, "afp": decode,
            "tpf_pooled": tpf / 2, "decode_tpf_pooled": decode / 2, "probe_nfe": probe, "nfe": 16 / tpf, "n": 100}


def test_only_the_policy_that_probes_is_marked_probing():
    rows = [_hrow("low_confidence", 1.0, 1.0), _hrow("threshold", 1.0, 4.0, threshold=0.9),
            _hrow("oracle", 1.0, 2.0, decode=8.0, probe=4, epsilon=1.0)]
    top = {r["policy"]: r["probing"] for r in headline(rows)}
    assert top == {"low_confidence": False, "threshold": False, "oracle": True}


def test_headline_table_columns_stay_aligned_with_long_knobs():
    knobs = {"threshold": 0.95, "epsilon": 0.3, "units": "cluster", "rule": "budget", "scorer": "head"}
    rows = [_hrow("low_confidence", 1.0, 1.0), _hrow("head-budget-cluster", 1.0, 5.0, **knobs)]
    lines = headline_table(headline(rows)).splitlines()
    assert {len(line) for line in lines[1:]} == {len(lines[1])}, lines  # rows as wide as the header


# ---------------------------------------------------------------- bootstraps


def _two_references(select_acc: int = 18, eval_acc: int = 18):
    """Two one-token-per-step runs (16 / 20 and 18 / 20 right): the window is under the better one.
    threshold 0.5: 17 / 20 in 1 forward (outside it); threshold 0.9: `*_acc` / 20 in 4 forwards."""
    def runs(acc):
        out = [_run("low_confidence", {"temperature": 0.5}, 20, 16, 16), _run("low_confidence", {}, 20, 18, 16),
               _run("threshold", {"threshold": 0.5}, 20, 17, 1), _run("threshold", {"threshold": 0.9}, 20, acc, 4)]
        return [r for r, _ in out], [it for _, it in out]
    return runs(select_acc), runs(eval_acc)


def test_the_bootstrap_reference_is_the_best_of_several_one_token_per_step_runs():
    (rows, items), _ = _two_references()
    top = {r["policy"]: r for r in headline(rows, measure="tpf_pooled")}
    ci = {r["policy"]: r for r in headline_intervals(rows, items, measure="tpf_pooled", n_boot=20)}
    assert top["threshold"]["tpf"] == pytest.approx(4.0) and ci["threshold"]["tpf"] == pytest.approx(4.0)


def test_the_held_out_bootstrap_takes_the_best_reference_on_both_sides():
    (sel_rows, sel_items), (rows, items) = _two_references(select_acc=18, eval_acc=17)
    point = {r["policy"]: r for r in heldout_headline(sel_rows, rows, measure="tpf_pooled")}
    ci = {r["policy"]: r for r in heldout_intervals(sel_rows, sel_items, rows, items, n_boot=20)}
    # chosen on the held-out side at 0.9 (4 TPF); 85 % on the evaluation side is below 90 % − 1 point
    assert point["threshold"]["tpf"] == pytest.approx(4.0) and point["threshold"]["within"] is False
    assert ci["threshold"]["tpf"] == pytest.approx(4.0) and ci["threshold"]["within"] is False


def test_a_run_exactly_one_point_below_is_within_the_window_in_the_bootstraps():
    """0.07 − 0.01 > 0.06 in floating point: the slack `headline` has must hold per replicate too."""
    rows, items = map(list, zip(_run("low_confidence", {}, 100, 7, 16),
                                _run("threshold", {"threshold": 0.5}, 100, 6, 1)))
    ci = {r["policy"]: r for r in headline_intervals(rows, items, measure="tpf", n_boot=10)}
    assert ci["threshold"]["tpf"] == 16.0
    held = {r["policy"]: r for r in heldout_intervals(rows, items, rows, items, measure="tpf", n_boot=10)}
    assert held["threshold"]["tpf"] == 16.0 and held["threshold"]["within"] is True


def test_a_policy_that_never_qualifies_on_the_held_out_items_has_no_value():
    rows, items = map(list, zip(_run("low_confidence", {}, 20, 20, 16),
                                _run("threshold", {"threshold": 0.5}, 20, 10, 1)))
    by = {r["policy"]: r for r in heldout_intervals(rows, items, rows, items, n_boot=20)}
    t = by["threshold"]
    assert (t["tpf"], t["tpf_lo"], t["tpf_n"], t["within"], t["within_rate"]) == (None, None, 0, False, 0.0)


def test_within_rate_and_counts_are_over_the_resamples_only():
    """The observed draw (replicate 0) is the point value, not one of the `n_boot` resamples."""
    sel = [_run("low_confidence", {}, 20, 20, 16), _run("demask", {"epsilon": 0.5}, 20, 20, 2)]
    ev = [_run("low_confidence", {}, 20, 20, 16), _run("demask", {"epsilon": 0.5}, 20, 19, 2)]
    (sel_rows, sel_items), (rows, items) = (list(map(list, zip(*s))) for s in (sel, ev))
    d = next(r for r in heldout_intervals(sel_rows, sel_items, rows, items, tolerance=0.05, n_boot=200)
             if r["policy"] == "demask")
    assert d["within"] is True and d["tpf_n"] == 200  # chosen in every resample (all right held out)
    # within iff the wrong item is drawn at most once (P ≈ 0.74): a count of the 200 resamples
    assert 0.5 < d["within_rate"] < 0.95 and d["within_rate"] * 200 == pytest.approx(round(d["within_rate"] * 200))


def test_headroom_is_over_the_best_baseline_and_the_reference_closes_none():
    heads = {"low_confidence": np.array([1.0]), "threshold": np.array([2.0]), "margin": np.array([4.0]),
             "oracle": np.array([8.0]), "demask": np.array([6.0])}
    shares = headroom_shares(heads)
    assert set(shares) == {"demask"} and shares["demask"][0] == pytest.approx((6 - 4) / (8 - 4))
    # no baseline with a qualifying run: no headroom to share
    none = headroom_shares({**heads, "threshold": np.array([np.nan]), "margin": np.array([np.nan])})
    assert np.isnan(none["demask"][0])


def test_the_interval_is_the_central_level_of_the_finite_values():
    values = np.concatenate([np.arange(101.0), [np.nan, np.inf]])
    out = percentile_interval(values, 0.9, "x")
    assert (out["x_lo"], out["x_hi"], out["x_n"]) == (pytest.approx(5.0), pytest.approx(95.0), 101)
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match=rf"`level` \({level}\) must lie in \(0, 1\)"):
            check_bootstrap("tpf", 0.01, 10, level)
    row = {"task": "t", "policy": "p", "level": 0.57, "n_boot": 10, "measure": "tpf", "tolerance": 0.01,
           "tpf": 2.0, "tpf_lo": 1.0, "tpf_hi": 3.0, "tpf_n": 10}
    assert "57% bootstrap intervals" in intervals_table([row])  # 100 · 0.57 is 56.99999999999999


def test_a_run_with_an_extra_item_is_refused():
    rows, items = map(list, zip(_run("low_confidence", {}, 5, 5, 16), _run("threshold", {"threshold": 0.5}, 5, 5, 1)))
    items[1] = [*items[1], _item(99, 1)]
    with pytest.raises(ValueError, match="must cover the same items"):
        headline_intervals(rows, items, n_boot=5)


# ---------------------------------------------------------------- prefix decisions


def test_prefix_costs_of_a_state_with_padding_inside():
    tv = torch.zeros(1, 3, 3)
    tv[0, 0, 2], tv[0, 2, 0] = 0.2, 0.1
    valid = torch.tensor([[True, False, True]])
    true, _, conf = prefix_costs(tv, tv, torch.tensor([[0.9, 0.99, 0.5]]), valid)
    assert true[0] == pytest.approx([0.0, 0.3, np.inf]) and conf[0, 2] == -np.inf
    with pytest.raises(ValueError, match="like `valid`"):
        prefix_costs(tv, tv, torch.ones(1, 2), valid[:, :2])


def test_a_cost_exactly_at_the_budget_does_not_exceed_it():
    rows = decision_table(np.array([[0.0, 0.5, 2.0]]), np.array([[0.0, 0.5, 2.0]]), np.array([[0.9, 0.8, 0.7]]),
                          epsilons=(0.5,))
    oracle = rows[0]
    assert (oracle["mean_length"], oracle["mean_true_cost"], oracle["exceed"]) == (2.0, 0.5, 0.0)


def test_far_is_strictly_past_twice_the_budget_and_knobs_are_the_first_of_ties():
    true = np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    conf = np.array([[0.99, 0.98, 0.97], [0.5, 0.4, 0.3]])
    by = {r["rule"]: r for r in decision_table(true, true.copy(), conf, epsilons=(0.5,))}
    # oracle: lengths 1 and 3 (mean 2); threshold at the same mean commits 3 and 1: cost 1.0 = 2ε
    thr = by["threshold"]
    assert (thr["mean_length"], thr["exceed"], thr["far"]) == (2.0, 0.5, 0.0)
    assert thr["knob"] == pytest.approx(0.401)  # every τ in (0.4, 0.97] gives mean 2: the first one
    assert by["head"]["knob"] == pytest.approx(1e-4)  # every ε' < 1 matches: the grid's first


# ---------------------------------------------------------------- sub-additivity


def test_enumeration_runs_when_its_cost_equals_the_limit():
    forward, tokens, pos, base = _inputs(CopyDenoiser([P0, P0], {1: 0}))  # 4 values: 4 copies
    assert enumerated_tv(forward, tokens, pos, base, max_copies=4).copies == 4
    assert enumerated_tv(forward, tokens, pos, base, max_copies=3) is None


def test_sampled_error_is_the_unbiased_standard_error_and_prefixes_are_shared():
    """On the copy pair each sample's weight is 1 (y₁ ≠ y₀) or 0, so the estimate is a share m of
    n samples and its standard error √(m(1 − m) / (n − 1)); the interval is ±3 of it."""
    forward, tokens, pos, base = _inputs(CopyDenoiser([P0, P0], {1: 0}))
    n = 50
    est = sampled_tv(forward, tokens, pos, base, samples=n, generator=torch.Generator().manual_seed(0))
    m = est.tv
    assert 0 < m < 1 and m * n == pytest.approx(round(m * n), abs=1e-6)
    assert est.err == pytest.approx(math.sqrt(m * (1 - m) / (n - 1)), abs=1e-6)
    assert (est.lo, est.hi) == pytest.approx((max(0.0, m - 3 * est.err), min(1.0, m + 3 * est.err)))
    assert est.support == n and 1 <= est.copies <= 3  # one copy per distinct first value, not per sample


def _two_row_state(den) -> StepState:
    """Row 0 all masked; row 1 with position 2 already set to 0."""
    tokens = torch.tensor([[MASK, MASK, MASK], [MASK, MASK, 0]])
    log_probs = torch.log_softmax(den(tokens).logits.double(), -1)
    conf, x0 = log_probs.exp().max(-1)
    mask = tokens == MASK
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    return StepState(tokens=tokens, mask=mask, x0=x0, confidence=conf, entropy=zeros, margin=zeros, step=0,
                     steps_per_block=3, block=0, block_start=0, block_end=3, block_masked=mask.sum(1),
                     block_log_probs=log_probs.float(), rows=torch.tensor([0, 1]),
                     probe=lambda copies, rows: den(copies).logits)


def test_set_probe_counts_steps_per_row_and_each_row_s_masked_positions():
    den = CopyDenoiser([P0, P0, P0], {1: 0})
    probe = SetProbe(Commit([0, 1]), MASK, min_set=2)
    state = _two_row_state(den)
    probe.select(state)
    probe.select(state)
    assert [(r["row"], r["step"], r["masked"]) for r in probe.records] == [(0, 0, 3), (1, 0, 2), (0, 1, 3), (1, 1, 2)]
    with pytest.raises(ValueError, match=r"`min_set` \(1\) must be >= 2"):
        SetProbe(Commit([0]), MASK, min_set=1)
