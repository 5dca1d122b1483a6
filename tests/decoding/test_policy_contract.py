"""One contract suite over every exported policy (diffusers-scheduler style)."""

import pytest
import torch

from depmask.decoding import POLICIES, generate
from depmask.decoding.policies import build_policy
from tests.decoding.states import FakeHead, random_state

# Defaults that cannot run alone: `demask` needs a trained head (a fake one here); `oracle` needs
# the loop's probe forwards, which hand-made states lack — tests/decoding/test_scorers.py runs it
# through `generate()` and checks the same contract there.
NEEDS_INPUT = {"demask": {"head": FakeHead()}}
PROBING = {"oracle"}

# every policy at its defaults, plus knob settings that stress the rule
CASES = [(name, NEEDS_INPUT.get(name, {})) for name in POLICIES if name not in PROBING] + [
    ("threshold", {"threshold": 1.0}),
    ("threshold", {"threshold": 0.05}),
    ("factor", {"factor": 0.1}),
    ("factor", {"factor": 10.0}),
    ("entropy_bound", {"gamma": 0.0}),
    ("entropy_bound", {"gamma": 100.0}),
    ("dilated", {"base": 3}),
    ("clad", {"threshold": 0.0}),
    ("clad", {"threshold": 1.0}),
    ("demask", {"head": FakeHead(), "epsilon": 0.0}),
    ("demask", {"head": FakeHead(), "epsilon": 100.0, "confidence_floor": 0.5}),
    ("guided", {"units": "cluster", "rule": "budget", "scorer": "attention", "epsilon": 0.05}),
    ("guided", {"units": "token", "rule": "conflict", "scorer": "head", "head": FakeHead()}),
    ("guided", {"units": "cluster", "rule": "conflict", "scorer": "none"}),
    ("guided", {"rule": "budget", "skip_blocked": True, "epsilon": 0.02}),
    ("guided", {"units": "cluster", "rule": "conflict", "edge_threshold": 0.0}),
]
IDS = [f"{n}-{k}" if k else n for n, k in CASES]


@pytest.mark.parametrize(("name", "knobs"), CASES, ids=IDS)
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("step", [0, 2, 7])
def test_select_contract_on_random_states(name, knobs, seed, step):
    state = random_state(seed, step=step)
    commit = build_policy(name, **knobs).select(state)
    assert commit.shape == state.mask.shape and commit.dtype == torch.bool
    assert not (commit & ~state.mask).any(), "committed an unmasked position"
    has_masks = state.mask.any(1)
    assert commit[has_masks].any(1).all(), "a row with masks committed nothing"
    assert not commit[~has_masks].any()


@pytest.mark.parametrize(("name", "knobs"), CASES, ids=IDS)
def test_decode_contract(name, knobs, mock_denoiser, prompts):
    gen_length, block_length = 16, 8
    res = generate(
        mock_denoiser, prompts, build_policy(name, **knobs),
        gen_length=gen_length, block_length=block_length, steps=8,
    )
    width = res.prompt_width
    assert res.tokens.shape == (3, width + gen_length)
    assert not (res.generated == mock_denoiser.mask_id).any(), "left masks behind"
    for i, p in enumerate(prompts):  # prompts untouched, right-aligned
        assert res.tokens[i, width - len(p) : width].tolist() == p
    assert (res.commit_step > 0).all()
    assert (res.nfe <= gen_length).all() and (res.nfe >= 2).all()  # >= one forward per block
    assert res.forwards >= int(res.nfe.max())  # rows may differ in steps per block
    # blocks go left to right: nothing in block 2 is committed before block 1 is complete
    first, second = res.commit_step[:, :block_length], res.commit_step[:, block_length:]
    assert (second.min(1).values > first.max(1).values).all()


@pytest.mark.parametrize(("name", "knobs"), CASES, ids=IDS)
def test_deterministic_under_fixed_generator(name, knobs, mock_denoiser, prompts):
    def run(seed):
        return generate(
            mock_denoiser, prompts, build_policy(name, **knobs), gen_length=8, steps=4,
            temperature=1.0, generator=torch.Generator().manual_seed(seed),
        )

    a, b = run(3), run(3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.commit_step, b.commit_step)


def test_sampling_uses_the_generator(mock_denoiser, prompts):
    outs = {
        tuple(generate(mock_denoiser, prompts, build_policy("random"), gen_length=8,
                       temperature=5.0, generator=torch.Generator().manual_seed(s)).tokens.flatten().tolist())
        for s in range(4)
    }
    assert len(outs) > 1


@pytest.mark.parametrize("name, knobs, message", [
    ("factor", {"factor": float("nan")}, r"`factor` \(nan\) must be > 0"),
    ("entropy_bound", {"gamma": float("nan")}, r"`gamma` \(nan\) must be >= 0"),
    ("demask", {"epsilon": float("nan")}, r"`epsilon` \(nan\) must be >= 0"),
    ("oracle", {"epsilon": float("nan")}, r"`epsilon` \(nan\) must be >= 0"),
    ("guided", {"rule": "conflict", "edge_threshold": float("nan")}, r"`edge_threshold` \(nan\) must be >= 0"),
    ("guided", {"rule": "conflict", "edge_floor": float("nan")}, r"`edge_floor` \(nan\) must be >= 0"),
])
def test_a_nan_knob_is_refused(name, knobs, message):
    """NaN fails every comparison: `factor` committed everything, `demask` one token per step,
    `entropy_bound` crashed mid-decode (a harvest spec's `json.loads` reads `NaN`)."""
    with pytest.raises(ValueError, match=message):
        build_policy(name, **knobs)


def test_cluster_units_without_a_confidence_floor_are_flagged(recwarn):
    """At τ = 0 the block's masked run is one cluster, committed whole in one forward whatever ε
    (CLAD's rule read literally, so it is kept, and said)."""
    with pytest.warns(UserWarning, match=r"`units` 'cluster' with `threshold` 0: .*commits it whole"):
        build_policy("guided", units="cluster")
    with pytest.warns(UserWarning, match=r"`units` 'cluster' with `threshold` 0"):
        build_policy("clad", threshold=0.0)
    recwarn.clear()
    assert build_policy("guided", units="cluster", threshold=0.5).threshold == 0.5 and not recwarn.list


@pytest.mark.parametrize("name, knob, bad", [("threshold", "threshold", float("nan")), ("threshold", "threshold", 1.5),
                                             ("factor", "factor", 0.0), ("entropy_bound", "gamma", -1.0),
                                             ("dilated", "skip", 0), ("margin", "eps", None), ("entropy", "eps", 1.0)])
def test_a_knob_set_after_building_is_checked_as_at_construction(name, knob, bad):
    # `policy.threshold = nan` was taken (a sweep setting knobs in place decoded one token per step)
    with pytest.raises(ValueError) as at_build:
        build_policy(name, **{knob: bad})
    policy = build_policy(name)
    before = getattr(policy, knob)
    with pytest.raises(ValueError) as later:
        setattr(policy, knob, bad)
    assert f"`{knob}` ({bad!r}) must" in str(later.value) and f"`{knob}` ({bad!r}) must" in str(at_build.value)
    assert getattr(policy, knob) == before
