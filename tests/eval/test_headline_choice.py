"""Which run the headline and the held-out headline choose: a probing policy by its decoding TPF,
the reference as the best one-token-per-step run, and the window's edge counted as inside."""

import pytest

from depmask.eval.headline import headline
from depmask.eval.heldout import heldout_headline


def _row(policy, accuracy, tpf, decode=None, probe=0, n=100, **knobs):
    """A summary row of task `t`; `decode`: TPF over decoding forwards (a probing policy's)."""
    decode = tpf if decode is None else decode
    return {"task": "t", "policy": policy, **knobs, "accuracy": accuracy, "tpf": tpf, "afp": decode,
            "tpf_pooled": tpf / 2, "decode_tpf_pooled": decode / 2, "probe_nfe": probe, "nfe": 16 / tpf, "n": n}


# two probing policies, each with a run that is better by TPF (3 > 2) and one better by decoding TPF (9 > 6)
PROBING = [_row("low_confidence", 1.0, 1.0),
           _row("oracle", 1.0, 3.0, decode=6.0, probe=4, epsilon=1.0),
           _row("oracle", 1.0, 2.0, decode=9.0, probe=6, epsilon=0.3),
           _row("oracle-conflict", 1.0, 3.0, decode=6.0, probe=4, threshold=0.9),
           _row("oracle-conflict", 1.0, 2.0, decode=9.0, probe=6, threshold=0.5)]
BEST = {"oracle": "epsilon=0.3", "oracle-conflict": "threshold=0.5"}


@pytest.mark.parametrize("measure,half", [("tpf", 1.0), ("tpf_pooled", 0.5)])
def test_a_probing_policy_is_chosen_by_its_decoding_tpf_whatever_its_name(measure, half):
    """The oracle's knob was chosen by TPF with its probe forwards counted, and a labelled probing
    crossing (not named `oracle`) was both chosen so and shown as not probing."""
    rows = {r["policy"]: r for r in headline(PROBING, measure=measure)}
    for policy, knobs in BEST.items():
        r = rows[policy]
        assert (r["knobs"], r["probing"]) == (knobs, True), policy
        assert r["decode_tpf"] == 9.0 * half and r["tpf"] == 2.0 * half
    held = {r["policy"]: r for r in heldout_headline(PROBING, PROBING, measure=measure)}
    for policy, knobs in BEST.items():
        r = held[policy]
        assert (r["knobs"], r["probing"], r["select_tpf"]) == (knobs, True, 9.0 * half), policy


def test_the_reference_is_the_best_of_several_one_token_per_step_runs():
    """With two `low_confidence` rows for a task, the worse one's accuracy set the window (plain
    headline) or whichever came first did (held-out headline)."""
    rows = [_row("low_confidence", 0.8, 1.0, temperature=0.5), _row("low_confidence", 0.9, 1.0, temperature=0.0),
            _row("threshold", 0.85, 6.0, threshold=0.5), _row("threshold", 0.9, 3.0, threshold=0.9)]
    top = {r["policy"]: r for r in headline(rows)}
    assert top["threshold"]["reference_accuracy"] == 0.9
    assert top["threshold"]["knobs"] == "threshold=0.9"  # 85 % is 5 points below 90 %
    select = [_row("low_confidence", 0.9, 1.0, temperature=0.5), _row("low_confidence", 0.9, 1.0, temperature=0.0),
              _row("threshold", 0.9, 6.0, threshold=0.5)]
    held = {r["policy"]: r for r in heldout_headline(select, rows)}
    assert held["threshold"]["reference_accuracy"] == 0.9  # the first evaluation row holds 0.8
    assert held["threshold"]["accuracy"] == 0.85 and held["threshold"]["within"] is False


def test_a_run_exactly_one_point_below_the_reference_is_within_the_window():
    """0.07 − 0.01 is 0.06000000000000001 in floating point: without the 1e-12 slack a run at 6 / 100
    fell outside the 1-point window of a reference at 7 / 100."""
    rows = [_row("low_confidence", 7 / 100, 1.0), _row("threshold", 6 / 100, 5.0, threshold=0.5)]
    top = {r["policy"]: r for r in headline(rows, tolerance=0.01)}
    assert top["threshold"]["accuracy"] == 0.06 and top["threshold"]["knobs"] == "threshold=0.5"
    select = [_row("low_confidence", 1.0, 1.0), _row("threshold", 1.0, 5.0, threshold=0.5)]
    held = {r["policy"]: r for r in heldout_headline(select, rows, tolerance=0.01)}
    assert held["threshold"]["accuracy"] == 0.06 and held["threshold"]["within"] is True
    below = [_row("low_confidence", 7 / 100, 1.0), _row("threshold", 5 / 100, 5.0, threshold=0.5)]
    held = {r["policy"]: r for r in heldout_headline(select, below, tolerance=0.01)}
    assert held["threshold"]["within"] is False  # two points below: outside


def test_with_no_loss_allowed_an_equally_accurate_run_is_within():
    """At `tolerance` 0 a strict comparison put a run exactly as accurate as the reference outside."""
    select = [_row("low_confidence", 1.0, 1.0), _row("threshold", 1.0, 5.0, threshold=0.5)]
    for acc in (0.9, 0.07, 1.0):
        rows = [_row("low_confidence", acc, 1.0), _row("threshold", acc, 5.0, threshold=0.5)]
        held = {r["policy"]: r for r in heldout_headline(select, rows, tolerance=0.0)}
        assert held["threshold"]["within"] is True, acc
        assert {r["policy"]: r for r in headline(rows, tolerance=0.0)}["threshold"]["accuracy"] == acc
