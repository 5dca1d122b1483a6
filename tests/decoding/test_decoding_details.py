"""Details of the per-row metrics, the trajectory text, the policy stamp's walk, candidates and the
greedy selector that the other decoding tests leave open: each test pins one behaviour a
plausible one-line slip would change without any other test noticing."""

import functools
import math
import types

import pytest
import torch

from depmask.decoding.clusters import (
    candidate_positions,
    most_confident,
    unit_confidence,
    unit_members,
)
from depmask.decoding.result import DecodeResult
from depmask.decoding.selector import greedy_select, prefix_cost
from depmask.decoding.stamp import PolicyStamp, modules_of
from depmask.decoding.trajectory import MASK, token_strings, trajectory_lines
from depmask.predictor import DependencyHead


def _result(commit_step, nfe, probe_nfe=None) -> DecodeResult:
    cs = torch.tensor(commit_step)
    return DecodeResult(tokens=torch.zeros(cs.shape[0], cs.shape[1], dtype=torch.long), prompt_width=0,
                        commit_step=cs, nfe=torch.tensor(nfe), forwards=int(max(nfe)), seconds=0.0,
                        probe_nfe=None if probe_nfe is None else torch.tensor(probe_nfe))


def _head() -> DependencyHead:
    torch.manual_seed(0)
    return DependencyHead(hidden_size=24, dim=16, layers=1, heads=2, max_distance=16).eval()


# --- result.py: metrics -----------------------------------------------------------------------


def test_a_row_without_forwards_has_tpf_zero_and_afp_nan():
    """TPF divides by NFE clamped to 1, so a row that took no forward (nothing to decode) has
    TPF 0, not 0 / 0 = NaN; its AFP (no committing step) is NaN, not 0."""
    res = _result([[0, 0]], [0])
    assert res.tpf().tolist() == [0.0]
    assert math.isnan(res.afp().item())


def test_kendall_tau_ignores_positions_filled_after_an_early_stop():
    """τ-b is over committed positions only: [1, 2, 0, 0] is the left-to-right order of its two
    committed positions, τ = 1. Counting the fills (step 0) as commits would give a negative τ."""
    assert _result([[1, 2, 0, 0]], [2]).kendall_tau().tolist() == [1.0]
    assert _result([[2, 1]], [2]).kendall_tau().tolist() == [-1.0]  # two positions are enough for τ


def test_summary_means_over_rows_skip_nan_and_name_each_metric():
    """`summary` averages NFE over rows (not sums), averages AFP and τ over the rows where they
    are defined (a NaN row is skipped, not propagated), and reports each under its own key."""
    res = _result([[1, 2, 3, 4], [3, 3, 3, 3]], [4, 4])  # τ: 1 and NaN (one step); AFP: 1 and 4
    s = _result([[1, 2, 3, 4], [3, 3, 3, 3]], [2, 6], probe_nfe=[1, 3]).summary()
    assert s["nfe"] == 4.0 and s["probe_nfe"] == 2.0
    s = res.summary()
    assert s["kendall_tau"] == pytest.approx(1.0)
    assert s["afp"] == pytest.approx(2.5)
    assert s["probe_nfe"] == 0.0  # no probing scorer: none spent
    empty = _result([[1, 1, 2, 2], [0, 0, 0, 0]], [2, 0])  # second row: AFP NaN
    assert empty.summary()["afp"] == pytest.approx(2.0)


# --- trajectory.py ----------------------------------------------------------------------------


def test_cells_are_as_wide_as_a_wide_mask_and_forward_numbers_are_right_aligned():
    """The cell width counts the mask string too, and the forward numbers are padded to the
    widest (the last) one, so the canvases of forwards 1 and 10 line up."""
    assert trajectory_lines([1, 2], ["a", "b"], mask="..") == ["forward 1 │ a  .. │ +1", "forward 2 │ a  b │ +1"]
    lines = trajectory_lines(list(range(1, 11)), list("abcdefghij"))
    assert lines[0].startswith("forward  1 │ a " + MASK)
    assert lines[-1].startswith("forward 10 │ a b")
    assert len({line.index("│") for line in lines}) == 1
    with pytest.raises(ValueError, match=r"must be >= 0"):
        trajectory_lines([-1, 1], ["x", "y"])  # the first position is checked too


def test_token_strings_strip_whitespace_markers_and_name_empty_and_unknown_pieces():
    """Pieces lose their `Ġ` / `▁` markers and surrounding blanks; a piece left empty is `∅`; an
    id the tokenizer has no piece for (None) is shown as the id."""

    class Tok:
        pieces = {5: "Ġthe", 6: "▁cat", 7: "Ġ", 8: None, 9: " x "}

        def convert_ids_to_tokens(self, ids):
            return [self.pieces[i] for i in ids]

    assert token_strings([5, 6, 7, 8, 9], Tok()) == ["the", "cat", "∅", "8", "x"]


# --- stamp.py: the walk and the stamp ---------------------------------------------------------


def test_the_walk_finds_heads_behind_bound_methods_keyword_partials_and_sets():
    """A head reached only through a bound method's `__self__`, a partial's keyword argument, a
    set or a frozenset is still found."""
    head = _head()

    class Holder:
        def __init__(self, h):
            self.h = h

        def predict(self):
            return self.h

    for holder in (Holder(head).predict, functools.partial(print, file=head), {head}, frozenset([head])):
        assert any(m is head for m in modules_of([holder])), type(holder).__name__


def test_the_walk_visits_its_top_object_even_if_it_looks_like_a_denoiser():
    """Only a denoiser *below* the walked object is skipped; the object itself is always walked."""
    head = _head()

    class Top:
        mask_id, fingerprint = 3, "m@local:1"

        def __init__(self):
            self.head = head

    assert [m is head for m in modules_of(Top())] == [True]


def test_the_walk_skips_compiled_steps_and_python_modules_and_survives_empty_cells():
    """`_compiled*` attributes (compiled steps) and module objects are not walked, and a closure
    cell not yet filled is passed over, not raised on."""

    class Policy:
        pass

    p = Policy()
    p._compiled_step = torch.nn.Linear(2, 2)
    fake = types.ModuleType("fake")
    fake.layer = torch.nn.Linear(2, 2)
    p.lib = fake
    assert modules_of(p) == []

    def make(h):
        def f():
            return h, later

        if h is None:
            later = 1  # noqa: F841 (never runs: the cell stays empty)
        return f

    head = _head()
    assert [m is head for m in modules_of(make(head))] == [True]


def test_a_submodule_mode_and_a_reshaped_parameter_change_the_stamp():
    """The stamp holds the mode of every submodule (not only the head's own) and the shape of
    every tensor: a reshape that keeps the bytes still changes what a library baked in."""
    from depmask.decoding import build_policy

    head = _head()
    policy = build_policy("demask", head=head, epsilon=0.3)
    stamp = PolicyStamp()
    first = stamp(policy)
    sub = next(head.children())
    sub.train()
    assert stamp(policy) != first
    sub.eval()
    assert stamp(policy) == first
    weight = next(p for p in head.parameters() if p.dim() == 2)
    weight.data = weight.data.reshape(-1)  # same memory, same bytes, another shape
    assert stamp(policy) != first


# --- clusters.py ------------------------------------------------------------------------------


def test_a_masked_position_of_confidence_zero_is_the_forced_candidate():
    """The forced candidate is the most confident *masked* position even at confidence 0 (an EOS
    candidate under `confidence_eos_eot_inf`) beside a more confident committed one: unmasked
    positions must be out of the argmax, not merely tied with it."""
    conf = torch.tensor([[0.9, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True]])
    assert most_confident(conf, mask).tolist() == [[1]]
    assert candidate_positions(conf, mask, 0.5).tolist() == [[False, True]]


def test_padding_units_have_confidence_minus_inf():
    cand = torch.tensor([[True, False, False, False]])  # one cluster; k = 2, the second is padding
    got = unit_confidence(unit_members(cand, "cluster"), torch.tensor([[0.4, 0.1, 0.1, 0.1]]))
    assert got.tolist() == [[pytest.approx(0.4), float("-inf")]]


# --- selector.py ------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(units="cluster", rule="budget"),
                                dict(units="cluster", rule="budget", skip_blocked=True),
                                dict(units="token", rule="budget", skip_blocked=True)])
def test_the_callers_dependency_matrix_is_not_modified(kw):
    """Clearing the diagonal is done on a copy: a float64 dependency (passed through `.to`
    unchanged) keeps its diagonal after the selection."""
    g = torch.Generator().manual_seed(0)
    dep = torch.rand(2, 5, 5, generator=g, dtype=torch.float64)
    before = dep.clone()
    conf = torch.rand(2, 5, generator=g, dtype=torch.float64)
    greedy_select(dep, conf, torch.ones(2, 5, dtype=torch.bool), threshold=0.0, epsilon=0.5, **kw)
    assert torch.equal(dep, before)


def test_the_general_graph_conflict_rule_commits_only_candidates():
    """With `edge_threshold` over token units a non-candidate (an already committed position) is
    never chosen, even with no conflict at all."""
    conf = torch.tensor([[0.9, 0.8, 0.7, 0.6]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, False]])
    got = greedy_select(torch.zeros(1, 4, 4), conf, mask, units="token", rule="conflict", edge_threshold=0.1)
    assert got.tolist() == [[True, False, True, False]]


def test_an_affinity_equal_to_the_edge_threshold_is_an_edge():
    """Every pair whose affinity *reaches* `edge_threshold` conflicts (≥, exact in binary here):
    of two equal units the more confident stays."""
    dep = torch.zeros(1, 2, 2, dtype=torch.float64)
    dep[0, 0, 1] = 0.25
    conf = torch.tensor([[0.8, 0.9]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    got = greedy_select(dep, conf, mask, units="token", rule="conflict", edge_threshold=0.25)
    assert got.tolist() == [[False, True]]


def test_the_conflict_rule_over_clusters_also_needs_a_floor_or_threshold():
    conf = torch.tensor([[0.9, 0.8]], dtype=torch.float64)
    with pytest.raises(ValueError, match="edge_floor"):
        greedy_select(torch.zeros(1, 2, 2), conf, torch.ones(1, 2, dtype=torch.bool), units="cluster",
                      rule="conflict")


def test_the_budget_prefix_stops_at_the_first_unit_that_breaks_it():
    """Without `skip_blocked` the chosen set is a prefix: a unit after one that broke the budget
    never joins, even when a signed dependency would bring the sum back under ε."""
    dep = torch.zeros(1, 3, 3, dtype=torch.float64)
    dep[0, 0, 1] = dep[0, 1, 0] = 0.3  # {0, 1}: 0.6 > ε
    dep[0, 0, 2] = dep[0, 2, 0] = -0.3  # {0, 1, 2}: 0.0 ≤ ε
    conf = torch.tensor([[0.9, 0.8, 0.7]], dtype=torch.float64)
    got = greedy_select(dep, conf, torch.ones(1, 3, dtype=torch.bool), units="token", epsilon=0.5)
    assert got.tolist() == [[True, False, False]]


def test_the_budget_is_summed_in_float64():
    """Dependencies are summed in float64: a pair 1e-9 over ε = 1 is blocked (in float32 the sum
    0.5 + (0.5 + 1e-9) rounds to exactly 1.0 and would join)."""
    dep = torch.zeros(1, 2, 2, dtype=torch.float64)
    dep[0, 0, 1], dep[0, 1, 0] = 0.5, 0.5 + 1e-9
    conf = torch.tensor([[0.9, 0.8]], dtype=torch.float64)
    for skip in (False, True):
        got = greedy_select(dep, conf, torch.ones(1, 2, dtype=torch.bool), units="token", epsilon=1.0,
                            skip_blocked=skip)
        assert got.tolist() == [[True, False]]


def test_prefix_cost_counts_the_diagonal_by_default():
    """`prefix_cost` (the head's training target) includes the diagonal unless told not to."""
    dep = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)
    order = torch.tensor([[1, 0]])
    assert prefix_cost(dep, order).tolist() == [[4.0, 10.0]]
    assert prefix_cost(dep, order, diagonal=False).tolist() == [[0.0, 5.0]]
