"""Prefix decisions (`eval/prefix_decisions.py`) on hand-made states (the command: test_predictor_quality)."""

import numpy as np
import pytest
import torch

from depmask.eval.prefix_decisions import (
    budget_lengths,
    decision_table,
    prefix_costs,
    threshold_lengths,
)

INF = np.inf


def test_prefix_costs_follow_confidence_order_and_pad_with_inf():
    tv = torch.zeros(2, 3, 3)
    tv[0, 0, 1], tv[0, 1, 2], tv[0, 2, 0], tv[0, 2, 1] = 0.4, 0.1, 0.2, 0.05
    tv[1, 0, 1], tv[1, 1, 0] = 0.3, 0.3
    tv[:, torch.arange(3), torch.arange(3)] = 9.0  # the diagonal never counts
    pred = tv / 2
    conf = torch.tensor([[0.5, 0.9, 0.7], [0.8, 0.6, 0.99]])  # row 1: position 2 is padding
    valid = torch.tensor([[True, True, True], [True, True, False]])
    true, guess, sorted_conf = prefix_costs(tv, pred, conf, valid)
    # row 0 visits 1, 2, 0: {1} 0; {1, 2} 0.1 + 0.05; {1, 2, 0} adds 0.4 + 0.2
    assert true[0] == pytest.approx([0.0, 0.15, 0.75])
    assert guess[0] == pytest.approx([0.0, 0.075, 0.375])
    assert true[1] == pytest.approx([0.0, 0.6, INF]) and sorted_conf[1, 2] == -INF
    assert sorted_conf[0] == pytest.approx([0.9, 0.7, 0.5])
    with pytest.raises(ValueError, match=r"`pred` \(2, 2, 2\)"):
        prefix_costs(tv, pred[:, :2, :2], conf, valid)


def test_lengths_stop_at_the_first_prefix_past_the_knob_and_commit_at_least_one():
    cost = np.array([[0.0, 0.2, 0.5, 1.2], [0.0, 0.9, INF, INF], [0.0, 0.05, 0.1, 0.2]])
    assert budget_lengths(cost, 0.3).tolist() == [2, 1, 4]
    assert budget_lengths(cost, 1.0).tolist() == [3, 2, 4]
    conf = np.array([[0.95, 0.9, 0.6, 0.2], [0.4, 0.3, -INF, -INF], [0.99, 0.98, 0.97, 0.5]])
    assert threshold_lengths(conf, 0.9).tolist() == [2, 1, 3]


def test_the_oracle_never_exceeds_a_perfect_head_matches_it_and_confidence_can_mislead():
    # state 0: its two most confident positions depend strongly on each other; state 1: nothing does
    true = np.array([[0.0, 0.8, 0.9, 1.0], [0.0, 0.0, 0.01, 0.02]])
    conf = np.array([[0.99, 0.98, 0.5, 0.4], [0.9, 0.8, 0.7, 0.6]])
    rows = decision_table(true, true.copy(), conf, epsilons=(0.5,))
    by = {r["rule"]: r for r in rows}
    assert by["oracle"]["exceed"] == 0.0 and by["oracle"]["mean_length"] == pytest.approx(2.5)  # 1 and 4
    assert by["head"]["mean_length"] == pytest.approx(2.5) and by["head"]["exceed"] == 0.0
    # at mean length 2.5 the threshold rule commits 2 and 3: state 0's strong pair goes through
    assert by["threshold"]["mean_length"] == pytest.approx(2.5)
    assert by["threshold"]["exceed"] == pytest.approx(0.5)
    assert by["threshold"]["mean_true_cost"] == pytest.approx((0.8 + 0.01) / 2)
    assert by["threshold"]["far"] == 0.0  # 0.8 is past ε = 0.5 but not past 2ε
    assert decision_table(true, true, conf, epsilons=(0.3,))[2]["far"] == pytest.approx(0.5)
    assert {r["n_states"] for r in rows} == {2}
    with pytest.raises(ValueError, match="> 0"):
        decision_table(true, true, conf, epsilons=(0.0,))
    with pytest.raises(ValueError, match="empty"):
        decision_table(true[:0], true[:0], conf[:0])

