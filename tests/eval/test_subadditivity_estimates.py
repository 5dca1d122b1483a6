"""Sub-additivity: the truncated estimate's interval, the top sets, which estimate and which verdict
`measure_set` reports, and the sets `SetProbe` measures — each value derived by hand on a
two-position denoiser whose positions copy one another."""


import pytest
import torch

from depmask.decoding.state import StepState
from depmask.eval.subadditivity import SetProbe, enumerated_tv, measure_set, top_set
from tests.eval.copy_denoiser import MASK, P0, Commit, CopyDenoiser, _inputs


def test_top_set_is_the_smallest_most_likely_set_with_mass_at_least_one_minus_delta():
    """Without its `+ 1` the top set stopped one value short: at δ = 0.4 it kept mass 0.5 < 0.6."""
    log_p = torch.tensor([0.2, 0.5, 0.3]).log()
    assert top_set(log_p, 0.4).tolist() == [1, 2]  # 0.5 < 0.6 ≤ 0.5 + 0.3, most likely first
    assert top_set(log_p, 0.1).tolist() == [1, 2, 0]  # 0.8 < 0.9: all three
    assert top_set(log_p, 0.6).tolist() == [1]  # 0.5 ≥ 0.4 already
    assert top_set(log_p, 0.0).tolist() == [0, 1, 2]  # δ = 0: all of V


def test_truncated_interval_of_the_copy_pair_matches_the_hand_computation():
    """The interval's lower end dropped the off-grid term ½|P(Gᶜ) − Q(Gᶜ)|: wider and off-centre."""
    forward, tokens, pos, base = _inputs(CopyDenoiser([P0, P0], {1: 0}))
    est = enumerated_tv(forward, tokens, pos, base, delta=0.25)
    # top sets at δ = 0.25: {0, 1} at both positions (0.5 < 0.75 ≤ 0.8); P = P0 ⊗ P0, Q(y0, y1) = P0(y0)·1[y1 = y0]
    # on the grid P = (.25, .15, .15, .09), Q = (.5, 0, 0, .3): inside = ½(.25 + .15 + .15 + .21) = .38
    # off the grid P(Gᶜ) = 1 − .64 = .36, Q(Gᶜ) = 1 − .8 = .2: lo = .38 + ½·.16 = .46, hi = .38 + ½·.56 = .66
    assert est.method == "truncated" and est.support == 4 and est.copies == 2
    assert est.lo == pytest.approx(0.46, abs=1e-6) and est.hi == pytest.approx(0.66, abs=1e-6)
    assert est.tv == pytest.approx(0.56, abs=1e-6) and est.err == pytest.approx(0.10, abs=1e-6)


def test_a_set_of_exactly_exact_max_set_positions_is_enumerated_exactly():
    """`|S| < exact_max_set` sent a set of exactly that size to the truncated grid."""
    forward, tokens, pos, base = _inputs(CopyDenoiser([P0, P0], {1: 0}))
    rec = measure_set(forward, tokens, pos, base, torch.tensor([0, 0]), exact_max_set=2, mask_id=MASK)
    assert rec["method"] == "exact" and rec["tv"] == pytest.approx(0.62, abs=1e-6)  # 1 − Σ P0²
    assert rec["tv_err"] == pytest.approx(0.0, abs=1e-6)  # the mask value's 1e-12 aside


def test_the_chain_verdict_is_its_own_when_the_chain_bound_is_below_the_top_k_bound():
    """`holds_chain` compared TV with the top-k bound: it could not fail where the chain does."""
    # each position copies the other once set; joint order (0, 1), top-1 value of P0 is 0
    forward, tokens, pos, base = _inputs(CopyDenoiser([P0, P0], {1: 0, 0: 1}))
    rec = measure_set(forward, tokens, pos, base, torch.tensor([0, 0]), topk=1, mask_id=MASK)
    # TV = 1 − Σ P0² = 0.62; I[1, 0] = I[0, 1] = TV(P0, δ_0) = 0.5; the chain keeps only I[1, 0]
    assert rec["tv"] == pytest.approx(0.62, abs=1e-6)
    assert rec["bound_topk"] == pytest.approx(1.0, abs=1e-6) and rec["bound_chain"] == pytest.approx(0.5, abs=1e-6)
    assert (rec["holds"], rec["holds_topk"], rec["holds_chain"]) == (True, True, False)


def _state(den) -> StepState:
    """The first step on an all-masked canvas of `den`, as the loop builds it for a probing policy."""
    l = len(den.marginals)
    tokens = torch.full((1, l), MASK)
    log_probs = torch.log_softmax(den(tokens).logits.double(), -1)  # [1, l, v]
    conf, x0 = log_probs.exp().max(-1)
    return StepState(tokens=tokens, mask=torch.ones(1, l, dtype=torch.bool), x0=x0, confidence=conf,
                     entropy=torch.zeros(1, l, dtype=torch.float64), margin=torch.zeros(1, l, dtype=torch.float64),
                     step=0, steps_per_block=l, block=0, block_start=0, block_end=l, block_masked=torch.tensor([l]),
                     block_log_probs=log_probs.float(), rows=torch.tensor([0]),
                     probe=lambda copies, rows: den(copies).logits)


def test_set_probe_measures_sets_of_min_set_positions_with_each_position_s_own_candidate():
    """Sets of exactly `min_set` positions were skipped (`<=`); the candidates were read in canvas
    order while the positions were in confidence order, so each position got the other's value."""
    # position 1 is the more confident (0.8 > 0.6): joint order (1, 0); position 0 copies position 1
    den = CopyDenoiser([[0.6, 0.2, 0.2], [0.1, 0.8, 0.1]], {0: 1})
    probe = SetProbe(Commit([0, 1]), MASK, min_set=2, topk=3)
    commit = probe.select(_state(den))
    assert commit.tolist() == [[True, True]] and probe.sizes == [2]
    (rec,) = probe.records
    assert rec["set_size"] == 2 and rec["positions"] == [1, 0] and (rec["row"], rec["step"]) == (0, 0)
    assert rec["confidence"] == pytest.approx([0.8, 0.6], abs=1e-6)
    # Q(y1, y0) = B(y1)·1[y0 = y1]: TV = 1 − Σ A·B = 1 − (.06 + .16 + .02) = 0.76
    assert rec["tv"] == pytest.approx(0.76, abs=1e-5) and rec["method"] == "exact"
    # k = 1: position 0 moves when position 1 takes its candidate 1: TV(A, δ_1) = 0.8 (with 0's own
    # candidate 0 it would be TV(A, δ_0) = 0.4); position 1 ignores position 0
    assert rec["bound"] == pytest.approx(0.8, abs=1e-5) and rec["holds"] is True
    # top-3 expectation over B: .1·.4 + .8·.8 + .1·.8 = 0.76, all of it in the chain (0 after 1)
    assert rec["bound_topk"] == pytest.approx(0.76, abs=1e-5) and rec["bound_chain"] == pytest.approx(0.76, abs=1e-5)
    smaller = SetProbe(Commit([0, 1]), MASK, min_set=3)
    smaller.select(_state(den))
    assert smaller.records == [] and smaller.sizes == [2]  # below `min_set`: counted, not measured
