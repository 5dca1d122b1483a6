"""Boundary values of the selection rules, the sampler and the per-row metrics, checked against
hand-derived expectations (each one an edge a plausible one-character slip would move)."""

import math

import pytest
import torch

from depmask.decoding import build_policy
from depmask.decoding.clusters import candidate_positions
from depmask.decoding.policies.dilated import Dilated, dilated_levels
from depmask.decoding.result import DecodeResult
from depmask.decoding.sampling import gumbel_argmax
from depmask.decoding.selector import greedy_select
from tests.decoding.states import one_row_state


def block_positions(commit: torch.Tensor, start: int) -> list[int]:
    return [i - start for i in commit[0].nonzero().flatten().tolist()]


@pytest.mark.parametrize("skip_blocked", [False, True])
def test_a_budget_spent_exactly_still_admits_the_unit(skip_blocked):
    """The budget rule keeps a set whose summed dependency is ≤ ε, equality included (DEMASK's
    `Σ D ≤ ε`). A strict `<` would block position 1 here (0.25 + 0.25 = 0.5 = ε, exact in binary)
    and, with `skip_blocked`, commit {0, 2} instead of all three."""
    dep = torch.zeros(1, 3, 3, dtype=torch.float64)
    dep[0, 0, 1] = dep[0, 1, 0] = 0.25
    conf = torch.tensor([[0.9, 0.8, 0.7]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    chosen = greedy_select(dep, conf, mask, units="token", rule="budget", epsilon=0.5, skip_blocked=skip_blocked)
    assert chosen[0].tolist() == [True, True, True]
    # just under the spent budget, position 1 cannot join (a prefix stops there; skipping goes on to 2)
    chosen = greedy_select(dep, conf, mask, units="token", rule="budget", epsilon=0.49, skip_blocked=skip_blocked)
    assert chosen[0].tolist() == [True, False, skip_blocked]


@pytest.mark.parametrize("edge_kw", [{"edge_floor": 0.1}, {"edge_threshold": 0.1}])
def test_a_larger_unit_beats_a_more_confident_one_even_at_confidence_one_against_zero(edge_kw):
    """The conflict rule keeps the larger unit of an edge; confidence only breaks ties of size
    ("never outweighs one position"). Here {0} has confidence 1.0 and {2, 3} 0.0 (an EOS candidate
    under `confidence_eos_eot_inf`): if confidence counted as much as a position, size 1 + 1.0 would
    tie size 2 + 0.0 and the tie would keep the left, smaller unit {0}."""
    dep = torch.full((1, 4, 4), 0.5, dtype=torch.float64)
    conf = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True]])  # position 1 committed: two clusters {0}, {2, 3}
    chosen = greedy_select(dep, conf, mask, units="cluster", rule="conflict", threshold=0.0, **edge_kw)
    assert chosen[0].tolist() == [False, False, True, True]


def test_a_confidence_equal_to_the_floor_is_a_candidate():
    """Candidates are the masked positions with confidence ≥ τ (CLAD / DEMASK's floor), so a
    position exactly at τ joins; `>` would drop it."""
    conf = torch.tensor([[0.9, 0.5, 0.4, 0.5]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    assert candidate_positions(conf, mask, 0.5)[0].tolist() == [True, True, False, False]
    chosen = greedy_select(torch.zeros(1, 4, 4), conf, mask, units="token", rule="budget", threshold=0.5,
                           epsilon=0.0)
    assert chosen[0].tolist() == [True, True, False, False]


def test_the_clad_floor_counts_the_keys_of_the_most_confident_query_on_the_canvas():
    """CLAD's edge floor with ≤ 2 clusters is 1.2 / L, L the keys the most confident masked
    position attends over — its *canvas* row of the attention, not the row with its block-relative
    index. Here the canvas has 2 padded positions whose query rows attend to nothing (captured as
    zeros); the block's rows attend over the 10 real keys. Clusters {0,1} and {6,7} have affinity
    (0.5 + 0.01) / 2 = 0.255 ≥ 1.2 / 10: an edge, and of two equal sizes the more confident {0,1}
    stays. Reading canvas row 0 (a padding row) would give L = 0, an infinite floor, no edge."""
    conf = [0.97, 0.96, 0.2, 0.2, 0.2, 0.2, 0.95, 0.94]  # τ = 0.9: CICs {0, 1} and {6, 7}
    prompt, pad = 4, 2
    l = prompt + len(conf)
    attn = torch.full((1, l, l), 0.01)
    attn[0, prompt + 0, prompt + 6] = 0.5
    attn[0, :, :pad] = 0.0  # padded keys
    attn[0, :pad, :] = 0.0  # padded queries attend to nothing
    state = one_row_state(conf, prompt=prompt, attention=attn)
    commit = build_policy("clad", threshold=0.9).select(state)
    assert block_positions(commit, prompt) == [0, 1]


def test_dilated_commits_a_level_position_whose_confidence_equals_the_threshold():
    """DUS remasks a level's tokens whose confidence is *below* the threshold (`conf < 0.3`), so a
    position at exactly 0.3 is committed with its level. Block 4, base 2, skip 1: levels {0, 2},
    {1, 3} (stride 4 // 2 = 2, then 1)."""
    assert dilated_levels(4, 2, 1) == ((0, 2), (1, 3))
    state = one_row_state([0.3, 0.1, 0.5, 0.1], prompt=2, step=0)
    commit = Dilated(base=2, skip=1, confidence_threshold=0.3).select(state)
    assert block_positions(commit, 2) == [0, 2]


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_gumbel_sampling_draws_from_the_softmax_of_the_logits_over_the_temperature(temperature):
    """At temperature T the candidate is a sample of softmax(logits / T) (LLaDA's
    `add_gumbel_noise`). Two tokens with logits 0 and ln 3: the second has probability
    3^(1/T) / (1 + 3^(1/T)) — 0.9 at T = 0.5, 0.634 at T = 2. Scaling the noise by 1 / T instead
    of T samples softmax(logits · T) and swaps the two."""
    n = 20000
    logits = torch.tensor([0.0, math.log(3.0)]).expand(1, n, 2)
    g = torch.Generator().manual_seed(0)
    share = gumbel_argmax(logits, temperature, g).double().mean().item()
    expected = 3 ** (1 / temperature) / (1 + 3 ** (1 / temperature))
    assert share == pytest.approx(expected, abs=0.02)


def test_positions_filled_after_an_early_stop_are_not_counted_as_committed():
    """`commit_step` 0 marks a position filled after `stop_at_eos`, not committed by a forward: a
    row that committed 3 positions in 2 forwards (steps 1, 1, 2) and had 2 filled has TPF 3 / 2 and
    AFP 3 / 2 (two distinct committing steps), not 5 / 2."""
    commit_step = torch.tensor([[1, 1, 2, 0, 0]])
    result = DecodeResult(tokens=torch.zeros(1, 7, dtype=torch.long), prompt_width=2, commit_step=commit_step,
                          nfe=torch.tensor([2]), forwards=2, seconds=0.0)
    assert result.committed.tolist() == [3]
    assert result.tpf().tolist() == [1.5]
    assert result.afp().tolist() == [1.5]
    assert result.summary()["tpf"] == 1.5
