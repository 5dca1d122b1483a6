"""Faithfulness: each policy against our own transcription of the published rule it claims. This
file: `low_confidence` (LLaDA), `threshold` and `factor` (Fast-dLLM); `entropy_bound`, `dilated`,
`margin` and `entropy` are in `test_faithfulness_eb_dus_dream.py`, the random states in
`faithfulness_states.py`.

The transcriptions live in `tests/decoding/reference.py`. Two levels of comparison:

- *State level* (the rule alone): random `StepState`s, including exact ties and values exactly
  at a threshold, go to the depmask policy; the same per-position statistics go to the
  transcribed rule *from the confidence / entropy / margin on* (not from logits, so that
  "exactly at the threshold" is exact). Where the reference breaks ties with `torch.topk` or an
  unstable sort (implementation-defined order), two selections are equal when they commit the
  same multiset of scores in every row; without ties that is plain equality.
- *Decode level* (rule plus loop glue): the transcribed reference loop and `depmask.generate`
  drive the same `MockDenoiser` from the same equal-length prompts at temperature 0, and the
  full canvases (and forward counts where the reference counts them) must match. Here the
  reference computes its statistics from the logits itself.

Every family also checks a deliberately wrong variant of its reference and requires it to
disagree with depmask at least once, so that each comparison can fail.
"""

from __future__ import annotations

import pytest
import torch

from depmask.decoding import StepState, build_policy, generate
from tests.decoding.faithfulness_states import (  # one_thread: autouse, one intra-op thread
    PROMPTS,
    SEEDS,
    check_rows,
    make_state,
    masked_scores,
    on_live_rows,
    one_thread,  # noqa: F401
    same_up_to_ties,
    state_with,
)
from tests.decoding.mock import MockDenoiser
from tests.decoding.reference import (
    LogitsModel,
    fastdllm_factor_select,
    fastdllm_generate,
    fastdllm_threshold_select,
    llada_generate,
    llada_schedule,
)

# --------------------------------------------------------------------------------------------
# 1. low_confidence == LLaDA generate()
# --------------------------------------------------------------------------------------------

LLADA_SETTINGS = [  # (gen_length, block_length, steps)
    (16, 16, 16),
    (16, 8, 8),
    (24, 8, 12),
    (16, 4, 16),
    (12, 12, 5),  # uneven schedule: 3, 3, 2, 2, 2
    (16, 4, 32),  # more steps than masks per block: LLaDA's trailing steps commit nothing
]


@pytest.mark.parametrize("mock_seed", [0, 1])
@pytest.mark.parametrize(("gen", "block", "steps"), LLADA_SETTINGS)
def test_low_confidence_reproduces_llada_generate(gen, block, steps, mock_seed):
    den = MockDenoiser(seed=mock_seed)
    model = LogitsModel(den)
    ref = llada_generate(model, torch.tensor(PROMPTS), steps=steps, gen_length=gen,
                         block_length=block, mask_id=den.mask_id)
    res = generate(den, PROMPTS, build_policy("low_confidence"), gen_length=gen,
                   block_length=block, steps=steps)
    assert not (ref == den.mask_id).any()
    assert torch.equal(res.tokens, ref)
    # LLaDA always makes `steps` forwards; depmask stops a block once it is complete, which only
    # saves the forwards where LLaDA's schedule commits nothing
    nb = gen // block
    assert model.calls == steps
    assert res.nfe.tolist() == [nb * min(steps // nb, block)] * len(PROMPTS)


def test_llada_comparison_can_fail():
    """A wrong schedule (remainder on the last steps instead of the first) must be caught."""
    def late_remainder(count, steps):
        return llada_schedule(count, steps).flip(1)

    den = MockDenoiser()
    res = generate(den, PROMPTS, build_policy("low_confidence"), gen_length=12, steps=5)
    good = llada_generate(LogitsModel(den), torch.tensor(PROMPTS), steps=5, gen_length=12,
                          block_length=12, mask_id=den.mask_id)
    bad = llada_generate(LogitsModel(den), torch.tensor(PROMPTS), steps=5, gen_length=12,
                         block_length=12, mask_id=den.mask_id, schedule=late_remainder)
    assert torch.equal(res.tokens, good) and not torch.equal(res.tokens, bad)


def test_temperature_zero_draws_no_random_numbers():
    """At temperature 0 `low_confidence` needs no sampling: the generator is untouched and the
    result does not depend on it. LLaDA's reference draws Gumbel noise even at T = 0, but the
    noise cancels (divisor (−log u)^0 = 1), so its result does not depend on the seed either."""
    den = MockDenoiser()
    kw = dict(gen_length=16, block_length=8, steps=8)
    g = torch.Generator().manual_seed(5)
    before = g.get_state().clone()
    a = generate(den, PROMPTS, build_policy("low_confidence"), generator=g, **kw)
    assert torch.equal(g.get_state(), before)
    b = generate(den, PROMPTS, build_policy("low_confidence"),
                 generator=torch.Generator().manual_seed(99), **kw)
    c = generate(den, PROMPTS, build_policy("low_confidence"), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, c.tokens)
    refs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        refs.append(llada_generate(LogitsModel(den), torch.tensor(PROMPTS), steps=8, gen_length=16,
                                   block_length=8, mask_id=den.mask_id))
    assert torch.equal(refs[0], refs[1]) and torch.equal(refs[0], a.tokens)


# --------------------------------------------------------------------------------------------
# 2. threshold == Fast-dLLM get_transfer_index(threshold=τ)
# --------------------------------------------------------------------------------------------



def _threshold_taus(state: StepState, variant: str) -> list[float]:
    if variant != "at_threshold":
        return [0.05, 0.3, 0.5, 0.9, 1.0]
    row = state.confidence[1][state.mask[1]].sort(descending=True).values
    return [float(row[i]) for i in (1, 2, len(row) // 2, len(row) - 1)]  # exactly some position


@pytest.mark.parametrize("variant", ["plain", "ties", "at_threshold", "one_hot"])
def test_threshold_commit_equals_fastdllm(variant):
    forced_below = multi = strict_differs = 0
    for seed in SEEDS:
        state, _ = make_state(seed, ties=variant == "ties", one_hot=variant == "one_hot")
        conf = masked_scores(state.confidence, state.mask)
        for tau in _threshold_taus(state, variant):
            got = build_policy("threshold", threshold=tau).select(state)
            check_rows(got, state, state.confidence, f"seed {seed} tau {tau}",
                       fastdllm_threshold_select, conf, state.mask, threshold=tau)
            counts = got.sum(1)
            forced_below += int(((counts == 1) & (conf.max(1).values < tau)).sum())
            multi += int((counts > 1).sum())
            strict = on_live_rows(state, fastdllm_threshold_select, conf, state.mask,
                                  threshold=tau, strict=True)
            strict_differs += int(not same_up_to_ties(got, strict, state.confidence))
    assert forced_below > 0 and multi > 0  # both halves of the rule were exercised
    if variant in ("at_threshold", "one_hot"):  # ">=" versus ">" matters exactly here
        assert strict_differs > 0


THRESHOLD_DECODES = [(16, 16), (16, 8), (24, 8), (16, 4)]  # (gen_length, block_length)


@pytest.mark.parametrize("tau", [0.5, 0.9])
@pytest.mark.parametrize(("gen", "block"), THRESHOLD_DECODES)
def test_threshold_decode_equals_fastdllm_generate(gen, block, tau):
    den = MockDenoiser()
    ref, nfe = fastdllm_generate(LogitsModel(den), torch.tensor(PROMPTS), steps=gen,
                                 gen_length=gen, block_length=block, mask_id=den.mask_id,
                                 threshold=tau)
    res = generate(den, PROMPTS, build_policy("threshold", threshold=tau), gen_length=gen,
                   block_length=block, steps=gen)
    assert torch.equal(res.tokens, ref)
    assert res.forwards == nfe  # batched forwards: a block ends when every row is done
    assert int(res.nfe.min()) < gen  # some forward committed more than one token


# --------------------------------------------------------------------------------------------
# 3. factor == Fast-dLLM get_transfer_index_dynamic
# --------------------------------------------------------------------------------------------

FACTORS = [0.1, 0.5, 1.0, 2.0, 4.0]


@pytest.mark.parametrize("variant", ["plain", "ties", "one_hot"])
def test_factor_commit_equals_fastdllm_dynamic(variant):
    no_bump_differs = multi = 0
    for seed in SEEDS:
        state, _ = make_state(seed, ties=variant == "ties", one_hot=variant == "one_hot")
        conf = masked_scores(state.confidence, state.mask)
        for f in FACTORS:
            got = build_policy("factor", factor=f).select(state)
            check_rows(got, state, state.confidence, f"seed {seed} factor {f}",
                       fastdllm_factor_select, conf, state.mask, factor=f)
            multi += int((got.sum(1) > 1).sum())
            wrong = on_live_rows(state, fastdllm_factor_select, conf, state.mask, factor=f,
                                 bump_last=False)
            no_bump_differs += int(not same_up_to_ties(got, wrong, state.confidence))
    assert multi > 0 and no_bump_differs > 0


@pytest.mark.parametrize(
    ("conf", "factor", "count"),
    [
        ([0.99, 0.98, 0.10], 1.0, 3),  # only the last rank misses its bar: the reference commits all
        ([0.99, 0.50, 0.98, 0.40], 1.0, 2),  # rank 3 (0.5 < 0.75) misses, not the last: top 2
        ([0.30, 0.20], 1.0, 2),  # two masks: rank 2 is the last, so always both
        ([0.40, 0.30, 0.20], 1.0, 1),  # rank 2 misses (0.3 < 0.667): only rank 1
        ([0.99, 0.90, 0.90, 0.80], 1.0, 4),  # 0.8 >= 1 − 1/5: nobody misses
    ],
)
def test_factor_edge_rule_by_hand(conf, factor, count):
    state = state_with(conf)
    got = build_policy("factor", factor=factor).select(state)
    ref = fastdllm_factor_select(masked_scores(state.confidence, state.mask), state.mask, factor)
    assert int(ref.sum()) == count
    assert torch.equal(got, ref)


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
@pytest.mark.parametrize(("gen", "block"), [(16, 16), (16, 8), (16, 4)])
def test_factor_decode_equals_fastdllm_generate(gen, block, factor):
    """Fast-dLLM's dynamic path cannot batch rows that finish a block at different steps (an
    empty row makes its threshold list empty), so the reference runs one prompt at a time."""
    den = MockDenoiser()
    res = generate(den, PROMPTS, build_policy("factor", factor=factor), gen_length=gen,
                   block_length=block, steps=gen)
    for i, p in enumerate(PROMPTS):
        ref, nfe = fastdllm_generate(LogitsModel(den), torch.tensor([p]), steps=gen,
                                     gen_length=gen, block_length=block, mask_id=den.mask_id,
                                     factor=factor)
        assert res.tokens[i].tolist() == ref[0].tolist()
        assert int(res.nfe[i]) == nfe
    assert int(res.nfe.min()) < gen
