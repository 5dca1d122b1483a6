"""Details of the decoding rules, the schedules, the sampler, the registry and the loop that the
faithfulness and contract tests leave open: knob defaults taken from the references, exact ties
and boundaries, the dilated scheduler's carried positions, the early-stop helpers and the state
the loop hands a policy. Each test pins one behaviour a plausible one-line slip would change."""

import math

import pytest
import torch

from depmask.decoding import Policy, build_policy, generate
from depmask.decoding.loop import _finished_at_eos, _first_eos_value, step_state
from depmask.decoding.policies import (
    Clad,
    Demask,
    Dilated,
    Entropy,
    EntropyBound,
    Factor,
    Guided,
    LowConfidence,
    Margin,
    Random,
    Threshold,
    check_policy,
    commit_top,
)
from depmask.decoding.policies.dilated import dilated_levels
from depmask.decoding.sampling import gumbel_argmax, token_statistics
from depmask.decoding.schedule import llada_count, llada_num_transfer
from depmask.models.denoiser import DenoiserOutput
from tests.decoding.mock import MockDenoiser
from tests.decoding.states import one_row_state


def block_positions(commit: torch.Tensor, start: int) -> list[int]:
    return [i - start for i in commit[0].nonzero().flatten().tolist()]


def test_knob_defaults_are_the_references_defaults():
    """The class defaults are what a bare preset name decodes with: Fast-dLLM's τ 0.9 and factor
    1, γ 0.1 nats, DUS's base 2 / skip 1 / confidence threshold 0.3 (its README), Dream's
    eps 1e-3, CLAD's τ 0.7 and DEMASK's ε 0.1 with no confidence floor."""
    assert Threshold().threshold == 0.9
    assert Factor().factor == 1.0
    assert EntropyBound().gamma == 0.1
    d = Dilated()
    assert (d.base, d.skip, d.confidence_threshold) == (2, 1, 0.3)
    assert Margin().eps == 1e-3 and Entropy().eps == 1e-3
    clad = Clad()
    assert clad.threshold == 0.7 and clad._guided.threshold == 0.7
    demask = Demask()
    assert (demask.epsilon, demask.confidence_floor) == (0.1, 0.0)
    assert (demask._guided.epsilon, demask._guided.threshold) == (0.1, 0.0)


def test_commit_top_breaks_a_long_tie_to_the_lowest_indices():
    """Ties go to the lower index on every device (a stable sort). With 40 equal scores an
    unstable CPU sort already returns another order."""
    score = torch.zeros(1, 40, dtype=torch.float64)
    mask = torch.ones(1, 40, dtype=torch.bool)
    mask[0, 1] = False
    commit = commit_top(score, mask, torch.tensor([3]))
    assert commit[0].nonzero().flatten().tolist() == [0, 2, 3]


def test_commit_top_ranks_in_float64():
    """Confidences are float64 and are ranked as such: 0.5 + 1e-12 beats 0.5 (in float32 the two
    tie and the lower index would win)."""
    score = torch.tensor([[0.5, 0.5 + 1e-12]], dtype=torch.float64)
    commit = commit_top(score, torch.ones(1, 2, dtype=torch.bool), torch.tensor([1]))
    assert commit[0].tolist() == [False, True]


def test_a_factor_rank_exactly_at_its_threshold_passes():
    """Rank n passes when c_n ≥ 1 − f/(n+1) (Fast-dLLM fails it only when below). f = 1: rank 3
    needs 0.75, met exactly; rank 4 needs 0.8 and 0.1 fails, so the top 3 commit (not 2)."""
    state = one_row_state([0.9, 0.8, 0.75, 0.1, 0.0], prompt=2)
    commit = Factor(factor=1.0).select(state)
    assert block_positions(commit, 2) == [0, 1, 2]


def test_dilated_carries_an_unconfident_position_to_the_next_level():
    """A level position left masked for low confidence joins the next level's group: block 8,
    levels {0, 4}, {2, 6}, {1, 3, 5, 7}; at step 1, position 0 (skipped at step 0, now 0.9) commits
    with level 1's confident position 2, while level 1's 6 (0.1) does not."""
    assert dilated_levels(8, 2, 1) == ((0, 4), (2, 6), (1, 3, 5, 7))
    conf = [0.9, 0.2, 0.8, 0.2, 0.0, 0.2, 0.1, 0.2]
    mask = [True, True, True, True, False, True, True, True]
    state = one_row_state(conf, prompt=3, mask=mask, step=1)
    commit = Dilated(base=2, skip=1, confidence_threshold=0.3).select(state)
    assert block_positions(commit, 3) == [0, 2]


def test_llada_count_past_the_budget_is_everything_left():
    """Past the block's step budget LLaDA's schedule has no entry: every masked position left is
    committed (for `low_confidence`, at the step index equal to `steps_per_block`)."""
    assert llada_count(torch.tensor([8]), torch.tensor([3]), 4, 4).tolist() == [3]
    state = one_row_state([0.1, 0.9, 0.5, 0.2], prompt=1, mask=[True, False, True, True], step=4)
    assert state.steps_per_block == 4
    assert block_positions(LowConfidence().select(state), 1) == [0, 2, 3]


def test_random_follows_the_schedule_of_the_blocks_initial_mask_count():
    """`random` draws LLaDA's `n_t` from the block's masked count when the block began (8 over 4
    steps: 2 each), not from what is left: at step 2 with 4 left it commits 2 (not 4 over 4: 1)."""
    state = one_row_state([0.5] * 8, prompt=1, mask=[True] * 4 + [False] * 4, step=2)
    state.block_masked, state.steps_per_block = torch.tensor([8]), 4
    state.generator = torch.Generator().manual_seed(0)
    commit = Random().select(state)
    assert int(commit.sum()) == 2 and not bool((commit & ~state.mask).any())


def test_llada_schedule_refuses_zero_steps_by_name():
    with pytest.raises(ValueError, match=r"`steps` \(0\) must be >= 1"):
        llada_num_transfer(torch.tensor([4]), 0)


def test_a_row_finishes_at_eos_only_with_everything_before_it_unmasked():
    """`stop_at_eos`: an EOS with a mask before it does not stop the row (the mask could still
    become an answer token); one with only masks after it does."""
    m, eos = 99, torch.tensor([7])
    gen = torch.tensor([[m, 7, 3], [1, 7, m], [1, 2, 3], [1, m, 2]])
    assert _finished_at_eos(gen, m, eos).tolist() == [False, True, False, False]


def test_an_early_stopped_row_is_filled_with_its_own_first_eos():
    """The masks left after an early stop are filled with the row's first committed EOS id (an
    end-of-turn id stays end-of-turn), and with the default only in a row without any."""
    eos = torch.tensor([7, 8])
    gen = torch.tensor([[1, 8, 99, 7], [1, 2, 99, 99]])
    assert _first_eos_value(gen, eos, 7).tolist() == [8, 7]


def test_left_padding_is_the_first_eos_id_by_default():
    """Shorter prompts are left-padded with the denoiser's first EOS id (not the mask id, not 0),
    and the padding is in the returned canvas."""
    den = MockDenoiser()
    pad = den.eos_ids[0]
    assert pad not in (0, den.mask_id)
    res = generate(den, [[1, 2, 3], [4]], build_policy("low_confidence"), gen_length=4)
    assert res.prompt_width == 3
    assert res.tokens[1, :2].tolist() == [pad, pad]
    assert res.tokens[1, 2].item() == 4
    assert res.attention_mask[1].tolist() == [False, False] + [True] * 5


class _Spy(Policy):
    """Commits the most confident position and records what the loop handed it."""

    name = "spy"

    def __init__(self):
        self.seen = []

    def select(self, state):
        self.seen.append((state.block, state.step, state.block_start, state.block_masked.tolist()))
        return commit_top(state.confidence, state.mask, torch.ones_like(state.num_masked))


def test_the_loop_hands_the_policy_its_block_and_step():
    """Two blocks of 3 (prompt width 2): the state names block 0 then 1, counts steps from 0
    inside each block, and starts each block with all 3 positions masked."""
    spy = _Spy()
    generate(MockDenoiser(), [[1, 2]], spy, gen_length=6, block_length=3, steps=6)
    assert spy.seen == [(0, 0, 2, [3]), (0, 1, 2, [3]), (0, 2, 2, [3]),
                        (1, 0, 5, [3]), (1, 1, 5, [3]), (1, 2, 5, [3])]


def test_the_mask_id_is_never_a_candidate_and_eos_candidates_get_confidence_zero():
    """The step's candidates never hold the mask id, even where the model ranks it first (it would
    be committed as a mask, and the block would never finish); with `confidence_eos_eot_inf` an EOS
    candidate's confidence is exactly 0 while `raw_confidence` keeps the model's p(x0).
    Vocabulary 4: id 3 is the mask, id 2 the EOS. Column 0 prefers the mask then 1; column 1 the
    EOS."""
    logits = torch.tensor([[[0.0, 2.0, 0.0, 5.0], [0.0, 0.0, 4.0, 0.0]]])
    x = torch.tensor([[1, 3, 3]])
    out = DenoiserOutput(logits=torch.cat([torch.zeros(1, 1, 4), logits], dim=1), hidden=None, attention=None)
    state = step_state(out, x, torch.tensor([[True, True]]), 1, 3, mask_id=3, eos=torch.tensor([2]),
                       confidence_eos_eot_inf=True)
    assert state.x0[0].tolist() == [1, 1, 2]
    assert state.confidence[0, 2].item() == 0.0
    assert state.raw_confidence[0, 2].item() == pytest.approx(math.exp(4) / (math.exp(4) + 3))
    assert state.confidence[0, 1].item() == pytest.approx(math.exp(2) / (math.exp(2) + math.exp(5) + 2))
    forced = gumbel_argmax(torch.tensor([[[0.0, 9.0, 1.0]]]), 0.7, torch.Generator().manual_seed(0), forbid=1)
    assert forced.item() != 1


def test_gumbel_argmax_refuses_a_negative_temperature():
    with pytest.raises(ValueError, match="must be >= 0"):
        gumbel_argmax(torch.zeros(1, 2, 3), -0.5)


def test_statistics_of_a_one_token_vocabulary():
    """One token: confidence 1, entropy 0 and margin 1 (the missing second token has p = 0)."""
    conf, ent, margin = token_statistics(torch.zeros(1, 2, 1), torch.zeros(1, 2, dtype=torch.long))
    assert conf.tolist() == [[1.0, 1.0]] and ent.tolist() == [[0.0, 0.0]] and margin.tolist() == [[1.0, 1.0]]


def test_statistics_are_computed_in_float64():
    """Logits 0 and 20: p(top) = 1 / (1 + e^-20), 1 − 2.1e-9 — below 1 in float64 (a float32
    softmax rounds it to exactly 1, tying it with certain positions)."""
    conf, ent, margin = token_statistics(torch.tensor([[[0.0, 20.0]]]), torch.tensor([[1]]))
    assert conf.dtype == torch.float64
    assert conf.item() < 1.0
    assert conf.item() == pytest.approx(1 / (1 + math.exp(-20)), abs=1e-15)
    assert ent.item() > 0


def test_build_policy_takes_the_class_name_too():
    policy = build_policy("EntropyBound", gamma=0.2)
    assert isinstance(policy, EntropyBound) and policy.gamma == 0.2


def test_check_policy_names_a_head_of_the_wrong_type_as_a_value_error():
    """A head that is no path fails inside the scorer as a TypeError; `check_policy` reports it
    as a ValueError that starts with where the policy came from."""
    with pytest.raises(ValueError, match=r"^configs/x\.yaml: "):
        check_policy("demask", {"head": 123}, "configs/x.yaml")


def test_a_bool_knob_value_is_refused_when_built_directly_or_set():
    """True is no threshold (it would compare as 1), built directly or set afterwards."""
    with pytest.raises(ValueError, match="threshold"):
        Threshold(threshold=True)
    policy = Threshold()
    with pytest.raises(ValueError, match="threshold"):
        policy.threshold = True
    assert policy.threshold == 0.9


def test_guided_takes_epsilon_and_the_floor_as_tensor_knobs():
    """`select_with` uses a given τ instead of the policy's (a compiled step passes it as a 0-d
    tensor): scorer `none` scores no dependency, so every candidate commits, and the candidates
    are the masked positions with confidence ≥ τ plus the most confident one."""
    policy = Guided(scorer="none", threshold=0.0)
    assert policy.tensor_knobs() == {"epsilon": 0.1, "threshold": 0.0}
    state = one_row_state([0.9, 0.2, 0.6, 0.4], prompt=2)
    assert block_positions(policy.select(state), 2) == [0, 1, 2, 3]
    commit = policy.select_with(state, threshold=torch.tensor(0.5, dtype=torch.float64))
    assert block_positions(commit, 2) == [0, 2]


def test_select_with_refuses_a_tensor_knob_the_policy_does_not_take():
    state = one_row_state([0.9, 0.2], prompt=1)
    with pytest.raises(ValueError, match="takes no tensor knobs"):
        Threshold().select_with(state, threshold=torch.tensor(0.5))
