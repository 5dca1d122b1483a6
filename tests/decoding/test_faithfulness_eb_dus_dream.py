"""Faithfulness of `entropy_bound` (EB-sampler), `dilated` (DUS), `margin` and `entropy` (Dream) to
our transcriptions of their references; the method is in the docstring of `test_faithfulness.py`."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from depmask.decoding import build_policy, generate
from depmask.decoding.policies.dilated import dilated_levels
from tests.decoding.faithfulness_states import (  # one_thread: autouse, one intra-op thread
    PROMPTS,
    SEEDS,
    B,
    check_rows,
    make_state,
    on_live_rows,
    one_thread,  # noqa: F401
    same_up_to_ties,
    state_with,
)
from tests.decoding.mock import MockDenoiser
from tests.decoding.reference import (
    LogitsModel,
    dream_count,
    dream_generate,
    dream_scores,
    dream_select,
    dus_block_levels,
    dus_generate,
    eb_generate,
    eb_select,
)

# --------------------------------------------------------------------------------------------
# 4. entropy_bound == EB-Sampler
# --------------------------------------------------------------------------------------------

GAMMAS = [0.0, 0.01, 0.1, 0.5, 1.0, 3.0, 100.0]


@pytest.mark.parametrize("variant", ["plain", "ties", "one_hot"])
def test_entropy_bound_commit_equals_eb_sampler(variant):
    sum_only_differs = multi = 0
    for seed in SEEDS:
        state, _ = make_state(seed, ties=variant == "ties", one_hot=variant == "one_hot")
        for gamma in GAMMAS:
            got = build_policy("entropy_bound", gamma=gamma).select(state)
            check_rows(got, state, state.entropy, f"seed {seed} gamma {gamma}",
                       eb_select, state.entropy, state.mask, gamma=gamma)
            multi += int((got.sum(1) > 1).sum())
            wrong = on_live_rows(state, eb_select, state.entropy, state.mask, gamma=gamma,
                                 minus_max=False)
            sum_only_differs += int(not same_up_to_ties(got, wrong, state.entropy))
    assert multi > 0 and sum_only_differs > 0


def test_entropy_bound_by_hand():
    # ascending 0, .05, .06, .5: sum − max over the prefixes = 0, 0, .05, .11 → 3 pass at γ = .1
    state = state_with([0.5] * 4, entropy=[0.06, 0.5, 0.0, 0.05])
    got = build_policy("entropy_bound", gamma=0.1).select(state)
    assert got.tolist() == [[True, False, True, True]]
    assert torch.equal(got, eb_select(state.entropy, state.mask, 0.1))


@pytest.mark.parametrize("gamma", [0.1, 1.0])
@pytest.mark.parametrize(("gen", "block"), [(16, 16), (16, 8), (24, 8)])
def test_entropy_bound_decode_equals_eb_loop(gen, block, gamma):
    den = MockDenoiser()
    ref, nfe = eb_generate(LogitsModel(den), torch.tensor(PROMPTS), gen_length=gen,
                           block_length=block, mask_id=den.mask_id, gamma=gamma)
    res = generate(den, PROMPTS, build_policy("entropy_bound", gamma=gamma), gen_length=gen,
                   block_length=block, steps=gen)
    assert torch.equal(res.tokens, ref)
    assert res.forwards == nfe
    assert int(res.nfe.min()) < gen


# --------------------------------------------------------------------------------------------
# 5. dilated == DUS levels; forwards per block
# --------------------------------------------------------------------------------------------

LEVEL_CASES = [
    (size, base, skip)
    for size in (4, 8, 16, 32, 64)
    for base in (1, 2, 3)
    for skip in (1, 2)  # DUS rejects skip_exp < 1
]


@pytest.mark.parametrize(("size", "base", "skip"), LEVEL_CASES)
def test_dilated_levels_equal_dus(size, base, skip):
    ref = dus_block_levels(size, base, skip)
    got = dilated_levels(size, base, skip)
    # the order inside a level is irrelevant (a level is committed at once); DUS appends the
    # merged leftovers unsorted, depmask sorts them
    assert [sorted(lv) for lv in ref] == [list(lv) for lv in got]
    assert sorted(i for lv in got for i in lv) == list(range(size))


MERGE_CASES = [(5, 2, 1), (7, 3, 1), (9, 2, 2), (23, 3, 1)]  # a short last level is merged


@pytest.mark.parametrize(("size", "base", "skip"), MERGE_CASES)
def test_dilated_levels_merge_short_last_level(size, base, skip):
    """For the power-of-two blocks above the merge never fires; on these sizes it does, so a
    variant without `merge_last_level` disagrees with depmask while DUS agrees."""
    got = [list(lv) for lv in dilated_levels(size, base, skip)]
    assert [sorted(lv) for lv in dus_block_levels(size, base, skip)] == got
    assert [sorted(lv) for lv in dus_block_levels(size, base, skip, merge=False)] != got


def test_dilated_levels_docstring_example():
    # B = 32, base 2, skip 1 gives five levels
    assert [len(lv) for lv in dus_block_levels(32, 2, 1)] == [2, 2, 4, 8, 16]


DILATED_DECODES = [(16, 8, 2, 1), (32, 16, 2, 1), (16, 4, 2, 1), (32, 32, 2, 2), (18, 9, 3, 1)]


@pytest.mark.parametrize(("gen", "block", "base", "skip"), DILATED_DECODES)
def test_dilated_confident_decode_equals_dus(gen, block, base, skip):
    """With a confident model DUS never remasks, and depmask must match it token for token in
    exactly len(levels) forwards per block."""
    den = MockDenoiser(scale=50.0)
    n_levels = len(dilated_levels(block, base, skip))
    res = generate(den, PROMPTS, build_policy("dilated", base=base, skip=skip), gen_length=gen,
                   block_length=block, steps=gen // block)
    for i, p in enumerate(PROMPTS):
        ref, nfe = dus_generate(LogitsModel(den), torch.tensor([p]), gen_length=gen,
                                block_length=block, mask_id=den.mask_id, base=base, skip_exp=skip)
        assert not (ref == den.mask_id).any()  # the premise: nothing was remasked
        assert res.tokens[i].tolist() == ref[0].tolist()
        assert nfe == (gen // block) * n_levels
    assert res.nfe.tolist() == [(gen // block) * n_levels] * len(PROMPTS)


def test_dilated_decode_with_a_merged_level_equals_dus():
    """Block length 5, base 2, skip 1: stride 2 gives {0, 2, 4}, then stride 1 gives {1, 3};
    the last level is shorter, so DUS merges the two and decodes each block in one forward."""
    den = MockDenoiser(scale=50.0)
    assert [len(lv) for lv in dus_block_levels(5, 2, 1)] == [5]
    res = generate(den, PROMPTS, build_policy("dilated", base=2, skip=1), gen_length=10,
                   block_length=5, steps=2)
    for i, p in enumerate(PROMPTS):
        ref, nfe = dus_generate(LogitsModel(den), torch.tensor([p]), gen_length=10,
                                block_length=5, mask_id=den.mask_id)
        assert res.tokens[i].tolist() == ref[0].tolist() and int(res.nfe[i]) == nfe == 2


@pytest.mark.parametrize(("gen", "block", "base", "skip"), DILATED_DECODES)
def test_dilated_unconfident_decode_leaves_no_mask(gen, block, base, skip):
    """With a flat model (every p(x0) < 0.3) DUS remasks every level but the last and its output
    keeps those masks; depmask carries them to the next level (its documented departure) and
    still finishes each block in len(levels) forwards."""
    den = MockDenoiser(scale=0.05)
    n_levels = len(dilated_levels(block, base, skip))
    res = generate(den, PROMPTS, build_policy("dilated", base=base, skip=skip), gen_length=gen,
                   block_length=block, steps=gen // block)
    assert not (res.generated == den.mask_id).any()
    assert res.nfe.tolist() == [(gen // block) * n_levels] * len(PROMPTS)
    ref, _ = dus_generate(LogitsModel(den), torch.tensor([PROMPTS[0]]), gen_length=gen,
                          block_length=block, mask_id=den.mask_id, base=base, skip_exp=skip)
    assert (ref == den.mask_id).any()  # the premise: the reference really does leave masks


# --------------------------------------------------------------------------------------------
# 6. margin / entropy == Dream's topk_margin / entropy
# --------------------------------------------------------------------------------------------

DREAM_ALGS = [("margin", "topk_margin"), ("entropy", "entropy")]


@pytest.mark.parametrize(("name", "alg"), DREAM_ALGS)
@pytest.mark.parametrize("variant", ["plain", "ties", "one_hot"])
def test_dream_count_and_order(name, alg, variant):
    """Per row: count = Dream's int(n·(1 − s/t)) (float32 timesteps), raised to 1 where Dream
    says 0 (depmask's documented at-least-one); positions = Dream's topk over its own score
    (top-1 − top-2, or Σ p·log(p + 1e-10)) computed from the same probabilities."""
    policy = build_policy(name)
    zero_seen = multi = wrong_order_differs = 0
    for seed in range(15):
        base_state, probs = make_state(seed, ties=variant == "ties", one_hot=variant == "one_hot")
        score, _ = dream_scores(probs, alg)
        other, _ = dream_scores(probs, "maskgit_plus")
        for steps in (1, 2, 3, 8, 16):
            for step in sorted({0, 1, steps // 2, steps - 1} & set(range(steps))):
                state = dataclasses.replace(base_state, step=step, steps_per_block=steps)
                got = policy.select(state)
                for r in range(B):
                    n = int(state.mask[r].sum())
                    if n == 0:
                        assert not got[r].any()
                        continue
                    k = dream_count(n, step, steps)
                    zero_seen += k == 0
                    want = min(n, max(1, k))
                    assert int(got[r].sum()) == want, (seed, steps, step, r, n, k)
                    ref = dream_select(score[r : r + 1], state.mask[r : r + 1], want)[0]
                    assert same_up_to_ties(got[r : r + 1], ref[None], score[r : r + 1]), (
                        seed, steps, step, r)
                    multi += want > 1
                    wrong = dream_select(other[r : r + 1], state.mask[r : r + 1], want)
                    wrong_order_differs += not same_up_to_ties(got[r : r + 1], wrong,
                                                               score[r : r + 1])
    assert zero_seen > 0 and multi > 0 and wrong_order_differs > 0


@pytest.mark.parametrize(("name", "alg"), DREAM_ALGS)
@pytest.mark.parametrize(("gen", "steps"), [(16, 8), (16, 4), (24, 6), (32, 8), (16, 2)])
def test_dream_decode_equals_dream_sample(name, alg, gen, steps):
    """One block, one prompt at a time (Dream averages its count over the batch), in settings
    where Dream never transfers zero tokens, so the at-least-one departure cannot apply."""
    den = MockDenoiser()
    res = generate(den, PROMPTS, build_policy(name), gen_length=gen, block_length=gen,
                   steps=steps)
    for i, p in enumerate(PROMPTS):
        ref, counts = dream_generate(LogitsModel(den), torch.tensor([p]), gen_length=gen,
                                     steps=steps, mask_id=den.mask_id, alg=alg)
        assert min(counts) >= 1 and sum(counts) == gen  # the premise
        assert res.tokens[i].tolist() == ref[0].tolist()
        assert int(res.nfe[i]) == steps
