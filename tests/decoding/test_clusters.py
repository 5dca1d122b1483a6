"""Candidates and confidence-induced clusters on hand-made masks."""

import pytest
import torch

from depmask.decoding.clusters import (
    candidate_positions,
    cluster_ids,
    max_units,
    unit_confidence,
    unit_members,
)


def _bool(rows):
    return torch.tensor(rows, dtype=torch.bool)


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        ([1, 1, 0, 1, 0, 0, 1, 1, 1], [0, 0, -1, 1, -1, -1, 2, 2, 2]),
        ([1, 1, 1, 1], [0, 0, 0, 0]),
        ([0, 0, 0, 0], [-1, -1, -1, -1]),
        ([1, 0, 1, 0, 1], [0, -1, 1, -1, 2]),
        ([0, 1, 1, 0], [-1, 0, 0, -1]),
    ],
)
def test_cluster_ids_are_maximal_runs(candidates, expected):
    assert cluster_ids(_bool([candidates])).tolist() == [expected]


def test_cluster_ids_rows_are_independent():
    cand = _bool([[1, 1, 0, 1], [0, 1, 0, 1], [1, 1, 1, 1]])
    assert cluster_ids(cand).tolist() == [[0, 0, -1, 1], [-1, 0, -1, 1], [0, 0, 0, 0]]
    for r in range(3):
        assert cluster_ids(cand[r : r + 1]).tolist() == [cluster_ids(cand)[r].tolist()]


def test_candidates_threshold_plus_the_forced_top():
    conf = torch.tensor([[0.95, 0.2, 0.91, 0.5], [0.3, 0.4, 0.2, 0.1], [0.99, 0.99, 0.99, 0.99]])
    mask = _bool([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    got = candidate_positions(conf, mask, 0.9)
    assert got.tolist() == [[True, False, True, False],  # above τ
                            [False, True, False, False],  # none above τ: only the most confident
                            [False, False, False, False]]  # nothing masked, nothing proposed


def test_an_unmasked_position_breaks_a_cluster():
    conf = torch.tensor([[0.9, 0.9, 0.9, 0.9, 0.9]])
    mask = _bool([[1, 1, 0, 1, 1]])  # position 2 was committed at an earlier step
    cand = candidate_positions(conf, mask, 0.5)
    assert cluster_ids(cand).tolist() == [[0, 0, -1, 1, 1]]


def test_unit_members_tokens_and_clusters():
    cand = _bool([[1, 0, 1, 1, 0, 1]])
    tokens = unit_members(cand, "token")
    assert tokens.shape == (1, 6, 6)
    assert tokens[0].nonzero().tolist() == [[0, 0], [2, 2], [3, 3], [5, 5]]
    clusters = unit_members(cand, "cluster")
    assert clusters.shape == (1, max_units(6, "cluster"), 6) == (1, 3, 6)
    assert [row.nonzero().flatten().tolist() for row in clusters[0]] == [[0], [2, 3], [5]]


@pytest.mark.parametrize("c", [1, 2, 5, 8, 9])
def test_the_static_unit_bound_is_reached_by_alternating_candidates(c):
    cand = torch.tensor([[i % 2 == 0 for i in range(c)]])
    members = unit_members(cand, "cluster")
    assert members.shape[1] == max_units(c, "cluster") == (c + 1) // 2
    assert members.any(-1).all()  # every slot used


def test_unit_confidence_is_the_highest_member():
    cand = _bool([[1, 1, 0, 1]])
    conf = torch.tensor([[0.5, 0.8, 0.99, 0.6]])
    got = unit_confidence(unit_members(cand, "cluster"), conf)
    assert got[0, :2].tolist() == pytest.approx([0.8, 0.6])
    assert got[0, 2:].tolist() == []  # k = 2 for c = 4


def test_unknown_units_are_named():
    with pytest.raises(ValueError, match="`units` \\('word'\\)"):
        unit_members(_bool([[1]]), "word")
