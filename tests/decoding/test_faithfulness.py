"""Faithfulness: each policy against our own transcription of the published rule it claims.

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

import dataclasses

import pytest
import torch

from depmask.decoding import StepState, build_policy, generate
from depmask.decoding.policies.dilated import dilated_levels
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
    fastdllm_factor_select,
    fastdllm_generate,
    fastdllm_threshold_select,
    llada_generate,
    llada_schedule,
)

PROMPTS = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 0, 2]]  # equal length: the references do not pad
B, L, V = 5, 24, 7
BLOCK = (4, 20)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny; on a loaded 2-core machine an intra-op thread pool turns each
    small reduction into milliseconds of synchronisation. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# random step states
# --------------------------------------------------------------------------------------------


def make_state(seed: int, *, ties: bool = False, one_hot: bool = False, step: int = 0,
               steps_per_block: int = 4) -> tuple[StepState, torch.Tensor]:
    """A random state and the probabilities [B, L, V] (float64) its statistics come from.

    Rows: 0 finished (no mask), 1 fully masked, 2 a single mask, 3-4 random. `ties` copies whole
    probability rows between masked positions (so confidence, entropy and margin all tie
    exactly), once onto the row's most confident position. `one_hot` makes two masked positions
    certain (confidence exactly 1, entropy exactly 0). Outside the mask the statistics are set
    to the most attractive values (confidence 1, entropy 0, margin 1): a policy must not read them.
    """
    g = torch.Generator().manual_seed(seed)
    s, e = BLOCK
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[:, s:e] = torch.rand(B, e - s, generator=g) < 0.6
    mask[0] = False
    mask[1, s:e] = True
    mask[2] = False
    mask[2, s + int(torch.randint(0, e - s, (1,), generator=g))] = True
    scale = (torch.rand(B, L, 1, generator=g) * 3 - 1).exp()  # 0.37 .. 7.4: flat to peaked
    probs = (torch.randn(B, L, V, generator=g) * scale).double().softmax(-1)
    for r in range(B):
        idx = mask[r].nonzero().squeeze(1)
        if idx.numel() < 3:
            continue
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        if ties:
            top = idx[probs[r, idx].max(-1).values.argmax()]
            other = perm[0] if perm[0] != top else perm[1]
            probs[r, other] = probs[r, top]  # a tie at the top
            probs[r, perm[2]] = probs[r, perm[1] if perm[1] != top else perm[0]]  # and another
        if one_hot:
            for pos in perm[-2:]:
                probs[r, pos] = 0.0
                probs[r, pos, int(torch.randint(0, V, (1,), generator=g))] = 1.0
    conf, x0 = probs.max(-1)
    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    top2 = probs.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    state = StepState(
        tokens=torch.where(mask, 99, torch.randint(0, V, (B, L), generator=g)),
        mask=mask,
        x0=torch.where(mask, x0, 0),
        confidence=conf.masked_fill(~mask, 1.0),
        entropy=entropy.masked_fill(~mask, 0.0),
        margin=margin.masked_fill(~mask, 1.0),
        step=step,
        steps_per_block=steps_per_block,
        block=0,
        block_start=s,
        block_end=e,
        block_masked=mask.sum(1),
        generator=torch.Generator().manual_seed(seed),
    )
    return state, probs


def state_with(confidence: list[float], entropy: list[float] | None = None) -> StepState:
    """A one-row state whose every position is masked, with the given statistics."""
    n = len(confidence)
    mask = torch.ones(1, n, dtype=torch.bool)
    conf = torch.tensor([confidence], dtype=torch.float64)
    ent = torch.tensor([entropy if entropy is not None else [0.0] * n], dtype=torch.float64)
    return StepState(tokens=torch.full((1, n), 99), mask=mask, x0=torch.zeros(1, n, dtype=torch.long),
                     confidence=conf, entropy=ent, margin=torch.zeros(1, n, dtype=torch.float64),
                     step=0, steps_per_block=1, block=0, block_start=0, block_end=n,
                     block_masked=torch.tensor([n]))


def masked_scores(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, score, torch.full_like(score, float("-inf")))


def same_up_to_ties(got: torch.Tensor, ref: torch.Tensor, score: torch.Tensor) -> bool:
    """Same number committed and the same multiset of scores committed, row by row."""
    return all(
        torch.equal(score[r][got[r]].sort().values, score[r][ref[r]].sort().values)
        for r in range(got.shape[0])
    )


def on_live_rows(state: StepState, ref_fn, *tensors: torch.Tensor, **kw) -> torch.Tensor:
    """Run a reference rule on the rows that still have masks (Fast-dLLM's dynamic rule cannot
    take an empty row); finished rows commit nothing."""
    live = state.mask.any(1)
    out = torch.zeros_like(state.mask)
    out[live] = ref_fn(*(t[live] for t in tensors), **kw)
    return out


def check_rows(got: torch.Tensor, state: StepState, score: torch.Tensor, what: str, ref_fn,
               *tensors: torch.Tensor, **kw):
    """The policy's commit equals `ref_fn(*tensors, **kw)` (up to ties in `score`)."""
    assert got.dtype == torch.bool and not (got & ~state.mask).any(), what
    assert not got[~state.mask.any(1)].any(), f"{what}: committed in a finished row"
    ref = on_live_rows(state, ref_fn, *tensors, **kw)
    assert same_up_to_ties(got, ref, score), (
        f"{what}\n depmask   {got.nonzero().tolist()}\n reference {ref.nonzero().tolist()}"
    )
    return ref


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

SEEDS = range(40)


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
