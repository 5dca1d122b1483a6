"""The none and attention scorers, and the guided policies over every scorer, through `select` and
through the real loop with the mock denoiser (the head and oracle scorers have files of their own)."""

import json

import pytest
import torch

from depmask.cli import main
from depmask.decoding import build_policy, generate
from depmask.decoding.scorers import (
    AttentionScorer,
    NoneScorer,
    build_scorer,
)
from depmask.models import HFDenoiser
from depmask.predictor import DependencyHead
from tests.conftest import EMBEDDED
from tests.decoding.mock import MockDenoiser
from tests.decoding.states import FakeHead, random_state


def test_none_scorer_is_zero():
    state = random_state(0)
    d = NoneScorer().score(state)
    assert d.shape == (4, 20, 20) and not d.any()


def test_attention_scorer_is_the_captured_attention():
    state = random_state(1)
    assert torch.equal(AttentionScorer().score(state), state.attention)
    state.attention = None
    with pytest.raises(ValueError, match="state.attention"):
        AttentionScorer().score(state)


# --- the guided policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "flags"),
    [
        ({"scorer": "attention"}, (False, True, False)),
        ({"scorer": "head", "head": FakeHead()}, (True, False, False)),
        ({"scorer": "oracle"}, (False, False, True)),
        ({"scorer": "none"}, (False, False, False)),
    ],
)
def test_needs_follow_the_scorer(knobs, flags):
    policy = build_policy("guided", **knobs)
    assert (policy.needs_hidden, policy.needs_attention, policy.needs_probe) == flags


def test_presets_declare_their_needs():
    assert build_policy("clad").needs_attention and not build_policy("clad").needs_hidden
    assert build_policy("demask", head=FakeHead()).needs_hidden
    assert build_policy("oracle").needs_probe
    assert build_policy("clad").knobs() == {"threshold": 0.7}
    assert build_policy("oracle").knobs() == {"epsilon": 0.1, "confidence_floor": 0.0, "chunk_size": 64,
                                              "memory_budget_mb": 8192}


@pytest.mark.parametrize(
    ("name", "knobs", "message"),
    [
        ("guided", {"rule": "sometimes"}, r"`rule` \('sometimes'\)"),
        ("guided", {"units": "word"}, r"`units` \('word'\)"),
        ("guided", {"epsilon": -1.0}, r"`epsilon` \(-1.0\)"),
        ("guided", {"threshold": 1.5}, r"`threshold` \(1.5\)"),
        ("guided", {"scorer": "magic"}, "unknown scorer 'magic'"),
        ("guided", {"scorer": "oracle", "chunk_size": 0}, r"`chunk_size` \(0\)"),
        ("clad", {"threshold": 2.0}, r"`threshold` \(2.0\)"),
        ("demask", {"confidence_floor": 1.5}, r"`confidence_floor` \(1.5\)"),
        ("oracle", {"confidence_floor": -0.1}, r"`confidence_floor` \(-0.1\)"),
        ("oracle", {"epsilon": -1.0}, r"`epsilon` \(-1.0\)"),
    ],
)
def test_bad_knobs_are_named(name, knobs, message):
    with pytest.raises(ValueError, match=message):
        build_policy(name, **knobs)


CROSSINGS = [
    ("clad", {"threshold": 0.5}),
    ("demask", {"head": FakeHead(), "epsilon": 0.3}),
    ("oracle", {"epsilon": 0.1}),
    ("guided", {"units": "cluster", "rule": "conflict", "scorer": "head", "head": FakeHead(), "threshold": 0.5}),
    ("guided", {"units": "token", "rule": "budget", "scorer": "attention", "epsilon": 0.2}),
    ("guided", {"units": "cluster", "rule": "conflict", "scorer": "oracle", "threshold": 0.5}),
    ("guided", {"units": "token", "rule": "budget", "scorer": "oracle", "skip_blocked": True}),
]


@pytest.mark.parametrize(("name", "knobs"), CROSSINGS, ids=[f"{n}-{k}" for n, k in CROSSINGS])
def test_rows_decode_the_same_alone_and_in_a_batch(name, knobs, prompts):
    den = MockDenoiser()
    batch = generate(den, prompts, build_policy(name, **knobs), gen_length=16, block_length=8)
    for i, p in enumerate(prompts):
        alone = generate(den, [p], build_policy(name, **knobs), gen_length=16, block_length=8)
        assert alone.generated[0].tolist() == batch.generated[i].tolist()
        assert torch.equal(alone.commit_step[0], batch.commit_step[i])
        assert int(alone.probe_nfe[0]) == int(batch.probe_nfe[i])


def test_build_scorer_names_unknown_scorers():
    with pytest.raises(ValueError, match="unknown scorer 'magic'"):
        build_scorer("magic")


# --- the command line -------------------------------------------------------------------------


def _embedded_head(tmp_path, fingerprint: str | None) -> str:
    den = HFDenoiser.from_pretrained(EMBEDDED)
    head = DependencyHead(hidden_size=den.hidden_size, dim=16, layers=1, heads=2,
                          base_fingerprint=fingerprint or den.fingerprint)
    return str(head.save_pretrained(tmp_path / "head"))


@pytest.mark.parametrize("policy", ["clad", "demask", "oracle"])
def test_depmask_decode_with_the_presets(tmp_path, capsys, policy):
    extra = ["--policy.head", _embedded_head(tmp_path, None)] if policy == "demask" else []
    main(["decode", "--model", str(EMBEDDED), "--prompt", "<sort> 8 1 3 3 9 5 7 2", "--gen_length", "8",
          "--policy", policy, *extra, "--json_output", "true"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["policy"] == policy and out["nfe"] >= 1
    assert len(out["rows"][0]["completion_ids"]) == 8


def test_depmask_decode_refuses_a_head_for_another_model(tmp_path):
    path = _embedded_head(tmp_path, "llada-8b@rev:0")
    with pytest.raises(ValueError, match="llada-8b@rev:0"):
        main(["decode", "--model", str(EMBEDDED), "--prompt", "<sort> 8 1 3", "--gen_length", "4",
              "--policy", "demask", "--policy.head", path])


def test_the_conflict_floor_without_attention_ignores_the_batch():
    """With ≤ 2 clusters CLAD's rule needs a weight ≥ 1.2 / L. Without captured attention L was the
    canvas width, padding included, so a short prompt's floor fell when a long prompt shared its
    batch (1.2 / 11 alone, 1.2 / 48 beside a 40-token prompt) and its decode changed; L is now the
    row's own unpadded length."""
    long_prompt = list(range(1, 11)) * 4
    changed = 0
    for seed in range(6):
        den = MockDenoiser(seed=seed, scale=1.0)
        for threshold in (0.2, 0.6):
            knobs = {"units": "cluster", "rule": "conflict", "scorer": "oracle", "threshold": threshold}
            alone = generate(den, [[1, 2, 3]], build_policy("guided", **knobs), gen_length=8, steps=8)
            batch = generate(den, [[1, 2, 3], long_prompt], build_policy("guided", **knobs), gen_length=8, steps=8)
            assert alone.commit_step[0].tolist() == batch.commit_step[0].tolist(), (seed, threshold)
            wide = generate(den, [[1, 2, 3]], build_policy("guided", **knobs, edge_floor=1.2 / 48), gen_length=8, steps=8)
            changed += wide.commit_step[0].tolist() != alone.commit_step[0].tolist()
    assert changed  # the floor matters on these decodes: the check above can fail


def test_a_preset_knob_set_after_construction_reaches_the_decode(prompts):
    """`clad.threshold = 0.0` changed the table (`knobs()`, repr) but not the decode: the preset
    kept its own copy, and its `Guided` decided. Now the knob is forwarded; the head and the
    oracle's `chunk_size` are fixed and say so."""
    den = MockDenoiser()
    clad = build_policy("clad", threshold=0.99)
    clad.threshold = 0.0
    fresh = build_policy("clad", threshold=0.0)
    assert torch.equal(generate(den, prompts, clad, gen_length=8).nfe, generate(den, prompts, fresh, gen_length=8).nfe)
    demask = build_policy("demask", head=FakeHead(), epsilon=0.1)
    demask.epsilon, demask.confidence_floor = 0.5, 0.2
    assert (demask._guided.epsilon, demask._guided.threshold) == (0.5, 0.2)
    with pytest.raises(AttributeError, match="build a new policy for another head"):
        demask.head = FakeHead()
    oracle = build_policy("oracle", epsilon=0.1)
    with pytest.raises(AttributeError, match="chunk_size is fixed"):
        oracle.chunk_size = 3


def test_guided_knobs_set_after_building_are_checked_and_the_scorers_are_fixed():
    # `g.scorer = "none"` changed knobs() and the tables while the decode kept the attention scorer;
    # `policy.epsilon = nan` was taken (NaN fails every comparison)
    g = build_policy("guided", units="token", rule="budget", scorer="attention", epsilon=0.1)
    for name, value in (("scorer", "none"), ("chunk_size", 4), ("memory_budget_mb", 1), ("head", "/x")):
        with pytest.raises(AttributeError, match=rf"Guided.{name} is fixed once the policy is built"):
            setattr(g, name, value)
    assert g.scorer == "attention"
    g.epsilon, g.rule = 0.3, "conflict"  # decision knobs may change
    assert (g.epsilon, g.rule) == (0.3, "conflict")
    for name, value, message in (("epsilon", float("nan"), r"`epsilon` \(nan\) must be >= 0"),
                                 ("threshold", 5.0, r"`threshold` \(5.0\) must lie in \[0, 1\]"),
                                 ("units", "word", r"`units` \('word'\) must be one of")):
        with pytest.raises(ValueError, match=message):
            setattr(g, name, value)
    with pytest.raises(ValueError, match=r"`threshold` \(None\) must be a number"):
        g.threshold = None
    g.memory_budget_mb = int("8192")  # the same value again is no change
    clad = build_policy("clad")
    with pytest.raises(ValueError, match=r"`threshold` \(5.0\)"):
        clad.threshold = 5.0
    assert clad.threshold == clad._guided.threshold != 5.0  # the preset kept its value too
    oracle = build_policy("oracle")
    with pytest.raises(ValueError, match=r"`confidence_floor` \(1.5\) must lie in \[0, 1\]"):  # the preset's name
        oracle.confidence_floor = 1.5
