"""Dependency scorers (none, attention, head, oracle) and the guided policies that use them, through
`select` and through the real loop with the mock denoiser."""

import json

import pytest
import torch

from depmask.cli import main
from depmask.decoding import StepState, build_policy, generate
from depmask.decoding.influence import denoiser_forward, gather_positions, pairwise_influence
from depmask.decoding.scorers import (
    AttentionScorer,
    HeadScorer,
    NoneScorer,
    OracleScorer,
    build_scorer,
)
from depmask.models import HFDenoiser
from depmask.predictor import DependencyHead
from tests.conftest import EMBEDDED
from tests.decoding.mock import MockDenoiser
from tests.decoding.test_policy_contract import FakeHead, random_state


class KnownHead:
    """Returns P[i, j] = 100 · pos_i + pos_j on valid pairs, and records what it was given."""

    def __init__(self):
        self.calls = []

    def predict(self, hidden, positions, valid, confidence=None, entropy=None):
        self.calls.append(dict(hidden=hidden, positions=positions, valid=valid, confidence=confidence,
                               entropy=entropy))
        p = positions.float()
        pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(valid.shape[1], dtype=torch.bool)
        return (100 * p[:, :, None] + p[:, None, :]) * pair


class Counting:
    """Wraps a denoiser: records the flags of each main forward and the rows of each probe forward."""

    def __init__(self, den):
        self.den, self.main, self.probe_rows = den, [], 0

    def __getattr__(self, name):
        return getattr(self.den, name)

    def __call__(self, tokens, attention_mask=None, need_hidden=None, need_attention=False):
        if need_hidden is None:  # the loop's probe passes no flags
            self.probe_rows += tokens.shape[0]
        else:
            self.main.append((tokens.shape[0], need_hidden, need_attention))
        return self.den(tokens, attention_mask, need_hidden=bool(need_hidden), need_attention=need_attention)


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


@pytest.mark.parametrize("seed", range(4))
def test_head_scorer_reads_the_block_in_place(seed):
    state = random_state(seed)
    head = KnownHead()
    d = HeadScorer(head).score(state)
    s, e = state.block_start, state.block_end
    call = head.calls[0]
    assert call["positions"].tolist() == [list(range(s, e))] * 4
    assert torch.equal(call["valid"], state.mask[:, s:e])  # committed columns are padding slots
    assert torch.equal(call["hidden"], state.hidden[:, s:e])
    assert torch.equal(call["confidence"], state.confidence[:, s:e])
    assert torch.equal(call["entropy"], state.entropy[:, s:e])
    assert torch.equal(HeadScorer(head).score_block(state), d[:, s:e, s:e])
    for r in range(4):
        masked = (state.mask[r].nonzero().flatten()).tolist()
        want = torch.zeros(20, 20)
        for i in masked:
            for j in masked:
                if i != j:
                    want[i, j] = 100 * i + j
        assert torch.equal(d[r], want)
        assert all(s <= i < e for i in masked)


@pytest.mark.parametrize("layers,pair_mlp,attention", [(2, True, False), (0, False, False), (1, False, False),
                                                       (0, True, True), (1, False, True)])
def test_a_real_head_predicts_the_same_in_place_as_on_gathered_slots(layers, pair_mlp, attention):
    """Reading the block in place (padding between slots) is exact: the head is equivariant to
    where its padding sits. Reference: the masked positions gathered to the front, as harvested
    (attention too: the harvest keeps the attention among the masked positions)."""
    torch.manual_seed(layers)
    state = random_state(7)
    head = DependencyHead(hidden_size=state.hidden.shape[-1], dim=16, layers=layers, heads=2,
                          max_distance=8, pair_mlp=pair_mlp, use_attention=attention).eval()
    for p in head.parameters():  # random, not the near-constant initial logits
        torch.nn.init.normal_(p, std=0.3)
    got = HeadScorer(head).score(state)
    assert (state.mask.sum(dim=1) >= 2).any()
    for r in range(4):
        masked = state.mask[r].nonzero().flatten()
        n = len(masked)
        att = state.attention[r : r + 1, masked[:, None], masked[None, :]] if attention else None
        pred = head.predict(state.hidden[r : r + 1, masked], masked[None], torch.ones(1, n, dtype=torch.bool),
                            state.confidence[r : r + 1, masked].float(), state.entropy[r : r + 1, masked].float(),
                            att)[0]
        assert torch.allclose(got[r][masked[:, None], masked[None, :]], pred, atol=1e-5)
        assert n < 2 or pred.abs().sum() > 0
        keep = torch.zeros(20, dtype=torch.bool)
        keep[masked] = True
        assert not got[r][~(keep[:, None] & keep[None, :])].any()


def test_head_scorer_without_a_head_names_the_flag():
    with pytest.raises(ValueError, match="--policy.head"):
        HeadScorer(None).score(random_state(0))
    policy = build_policy("demask")  # builds (its YAML has `head: null`) ...
    with pytest.raises(ValueError, match="--policy.head"):  # ... but refuses to decode
        generate(MockDenoiser(), [[1, 2]], policy, gen_length=4)


def _real_head(tmp_path, fingerprint):
    torch.manual_seed(0)
    head = DependencyHead(hidden_size=8, dim=16, layers=1, heads=2, max_distance=16, base_fingerprint=fingerprint)
    return str(head.save_pretrained(tmp_path / "head"))


def test_demask_decodes_with_a_real_head_checkpoint(tmp_path, prompts):
    den = Counting(MockDenoiser())
    path = _real_head(tmp_path, den.fingerprint)
    policy = build_policy("demask", head=path, epsilon=0.5)
    assert policy.head == path and policy.needs_hidden and not policy.needs_attention
    res = generate(den, prompts, policy, gen_length=16, block_length=8)
    assert not (res.generated == den.mask_id).any()
    assert all((hidden, attention) == (True, False) for _, hidden, attention in den.main)  # the loop asked for hidden states
    assert (res.nfe < 16).all()  # a budget of 0.5 lets some steps commit several positions


def test_a_head_that_reads_attention_makes_the_loop_capture_it(prompts):
    den = Counting(MockDenoiser())
    torch.manual_seed(0)
    head = DependencyHead(hidden_size=8, dim=16, layers=0, heads=2, max_distance=16, use_attention=True,
                          base_fingerprint=den.fingerprint).eval()
    policy = build_policy("demask", head=head, epsilon=0.5)
    assert policy.needs_hidden and policy.needs_attention and "attention" in policy.state_fields
    res = generate(den, prompts, policy, gen_length=16, block_length=8)
    assert not (res.generated == den.mask_id).any()
    assert den.main and all((hidden, attention) == (True, True) for _, hidden, attention in den.main)
    assert not build_policy("demask", head=_plain_head(den)).needs_attention  # the class default stays off
    state = random_state(0)
    state.attention = None
    with pytest.raises(ValueError, match="use_attention=True"):
        HeadScorer(head).score(state)


def _plain_head(den):
    return DependencyHead(hidden_size=8, dim=16, layers=0, heads=2, max_distance=16,
                          base_fingerprint=den.fingerprint).eval()


def test_binding_moves_the_head_only_when_it_is_elsewhere(monkeypatch):
    den = MockDenoiser()
    head = _plain_head(den)
    moves = []
    monkeypatch.setattr(head, "to", lambda device: moves.append(torch.device(device)) or head)
    scorer = HeadScorer(head)
    scorer.bind(den)  # already on the model's device: no module walk
    assert moves == []
    head.to_empty(device="meta")  # the head elsewhere
    scorer.bind(den)
    assert moves == [torch.device("cpu")]


def test_a_head_for_another_model_is_refused_before_decoding(tmp_path, prompts):
    den = MockDenoiser()
    path = _real_head(tmp_path, "some-other-model@rev:abc")
    policy = build_policy("demask", head=path)
    with pytest.raises(ValueError, match="some-other-model") as err:
        generate(den, prompts, policy, gen_length=8)
    assert den.fingerprint in str(err.value)
    assert den.calls == 0, "the model ran before the head was checked"


def test_a_wrong_head_path_fails_when_the_policy_is_built(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_policy("demask", head=str(tmp_path / "nowhere"))


# --- oracle -----------------------------------------------------------------------------------


def probing_state(den, seed: int = 0, b: int = 3, l: int = 12, block=(4, 12)):
    """A state as the loop builds it for a probing policy, plus a probe that counts copies."""
    g = torch.Generator().manual_seed(seed)
    s, e = block
    tokens = torch.randint(0, den.mask_id, (b, l), generator=g)
    tokens[:, s:] = den.mask_id
    tokens[1, s + 2] = 3  # a committed position inside the block
    mask = tokens == den.mask_id
    mask[:, :s] = False
    logits = den(tokens).logits.float()  # [b, l, v]
    probs = logits.softmax(-1).double()
    conf, x0 = probs.max(-1)
    copies = torch.zeros(b, dtype=torch.long)

    def probe(batch, rows):
        copies.index_add_(0, rows, torch.ones_like(rows))
        return den(batch).logits

    state = StepState(
        tokens=tokens, mask=mask, x0=torch.where(mask, x0, tokens), confidence=conf.masked_fill(~mask, 0),
        entropy=torch.zeros(b, l, dtype=torch.float64), margin=torch.zeros(b, l, dtype=torch.float64), step=0,
        steps_per_block=e - s, block=0, block_start=s, block_end=e, block_masked=mask.sum(1),
        block_log_probs=torch.log_softmax(logits[:, s:e], -1), probe=probe,
    )
    return state, copies


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_oracle_scorer_equals_a_direct_pairwise_influence_call(chunk):
    den = MockDenoiser(seed=1)
    state, copies = probing_state(den)
    d = OracleScorer(chunk_size=chunk).score(state)
    b, l = state.mask.shape
    m = int(state.mask.sum(1).max())
    positions = torch.zeros(b, m, dtype=torch.long)
    valid = torch.zeros(b, m, dtype=torch.bool)
    for r in range(b):
        idx = state.mask[r].nonzero().flatten()
        positions[r, : len(idx)], valid[r, : len(idx)] = idx, True
    base = torch.log_softmax(gather_positions(den(state.tokens).logits, positions).float(), -1)
    values = state.x0.gather(1, positions)
    direct = pairwise_influence(denoiser_forward(den), state.tokens, positions, valid, base, values)
    for r in range(b):
        n = int(valid[r].sum())
        p = positions[r, :n]
        torch.testing.assert_close(d[r][p][:, p], direct.tv[r, :n, :n], atol=1e-6, rtol=1e-5)
        assert d[r].sum() == pytest.approx(float(direct.tv[r].sum()), abs=1e-5)  # zero elsewhere
    assert copies.tolist() == state.mask.sum(1).tolist()  # one copy per masked position
    assert d.sum() > 0


def test_the_oracle_probes_only_candidates():
    den = MockDenoiser(seed=2)
    state, copies = probing_state(den)
    policy = build_policy("oracle", confidence_floor=0.3)
    commit = policy.select(state)
    s, e = state.block_start, state.block_end
    cand = state.mask & (state.confidence >= 0.3)
    top = state.confidence.masked_fill(~state.mask, -1).argmax(1)
    cand[torch.arange(3), top] = True
    assert copies.tolist() == [n if n > 1 else 0 for n in cand.sum(1).tolist()]  # a lone candidate: no pair
    assert not (commit & ~cand).any() and commit[:, s:e].any(1).all()


def test_a_row_with_one_candidate_costs_no_probe(prompts):
    """With one candidate there is no pair to measure and that candidate is committed anyway: the
    oracle used to spend (and count) one probe forward on it, e.g. at each block's last step."""
    res = generate(MockDenoiser(), prompts, build_policy("oracle", confidence_floor=1.0), gen_length=16,
                   block_length=8)
    assert (res.nfe == 16).all() and (res.probe_nfe == 0).all()  # one token per step, nothing probed


def test_the_oracle_budget_counts_the_statistics_of_the_probed_positions(monkeypatch):
    """`chunk_for_budget` charged a copy its canvas logits only; `pairwise_influence` also holds
    `[n, m, v]` float32 statistics of the m probed positions, which on a block as long as the
    canvas more than doubled the memory a chunk used."""
    import depmask.decoding.scorers.oracle as oracle_module
    from depmask.decoding.influence import chunk_for_budget

    den = MockDenoiser(seed=1)
    state, _ = probing_state(den)
    l, v = state.tokens.shape[1], state.block_log_probs.shape[-1]
    m = int(state.mask[:, state.block_start:state.block_end].sum(1).max())
    budget_mb = 1
    seen = {}

    def spy(*args, chunk_size, **kwargs):
        seen["chunk"], seen["m"] = chunk_size, args[2].shape[1]
        return pairwise_influence(*args, chunk_size=chunk_size, **kwargs)

    monkeypatch.setattr(oracle_module, "pairwise_influence", spy)
    OracleScorer(chunk_size=10**9, memory_budget_mb=budget_mb).score(state)
    assert seen["m"] == m
    assert seen["chunk"] == (2**20) // (12 * l * v + 16 * m * v) < (2**20) // (12 * l * v)
    assert chunk_for_budget(28 * 10 * 100, 10, 100, positions=10) == 1  # 12 + 16 bytes per logit
    assert chunk_for_budget(28 * 10 * 100, 10, 100) == 2


def test_oracle_scorer_refuses_a_state_without_a_probe():
    with pytest.raises(ValueError, match="state.probe"):
        OracleScorer().score(random_state(0))


def test_oracle_decoding_counts_its_probe_forwards(prompts):
    den = Counting(MockDenoiser())
    res = generate(den, prompts, build_policy("oracle", epsilon=0.2), gen_length=16, block_length=8)
    width = res.prompt_width
    assert not (res.generated == den.mask_id).any()
    for i, p in enumerate(prompts):
        assert res.tokens[i, width - len(p) : width].tolist() == p
    assert (res.probe_nfe > 0).all()
    assert int(res.probe_nfe.sum()) == den.probe_rows  # every copy is counted, per row
    assert int((res.nfe - res.probe_nfe).sum()) == sum(n for n, *_ in den.main)  # the rest are main forwards
    assert res.summary()["probe_nfe"] > 0
    again = generate(MockDenoiser(), prompts, build_policy("oracle", epsilon=0.2), gen_length=16, block_length=8)
    assert torch.equal(res.tokens, again.tokens) and torch.equal(res.nfe, again.nfe)


def test_oracle_with_a_large_budget_commits_a_block_per_step(prompts):
    res = generate(MockDenoiser(), prompts, build_policy("oracle", epsilon=1e9), gen_length=16, block_length=8)
    assert ((res.nfe - res.probe_nfe) == 2).all()  # one main forward per block


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


def test_a_copy_of_the_model_in_another_directory_keeps_its_head(tmp_path):
    """Fingerprints are `name@revision:config-weights`, the name from the directory: a head was
    refused for a bit-identical copy of its model (`tiny-copy@local:…` against `tiny-tasks@local:…`,
    the same hashes). Models are compared by their hashes; other weights are still refused."""
    import shutil

    from depmask.models import HFDenoiser
    from depmask.models.fingerprint import same_model
    from depmask.predictor import DependencyHead
    from tests.conftest import EMBEDDED, ROOT

    copy = tmp_path / "tiny-copy"
    shutil.copytree(EMBEDDED, copy)
    den = HFDenoiser.from_pretrained(copy)
    head = DependencyHead.from_pretrained(ROOT / "models" / "tiny-tasks-head", denoiser=den)  # not refused
    assert den.fingerprint != head.base_fingerprint and same_model(den.fingerprint, head.base_fingerprint)
    assert not same_model("m@local:aaa-bbb", "m@local:aaa-ccc") and same_model(None, None)


@pytest.mark.parametrize("scorer", ["attention", "oracle", "none"])
def test_a_head_given_to_another_scorer_is_refused(scorer):
    # it was dropped without a word, and a run labelled as head-scored decoded with attention
    with pytest.raises(ValueError, match=rf"`head` \(/no/such/head\) is given but `scorer` is '{scorer}'"):
        build_policy("guided", units="cluster", rule="conflict", scorer=scorer, head="/no/such/head")


def test_the_oracle_probes_fewer_copies_per_forward_when_their_logits_pass_the_budget():
    # 64 copies of a 1,536-token canvas at LLaDA's vocabulary hold ~100 GB of logits
    from depmask.decoding.scorers import OracleScorer

    scorer = OracleScorer(chunk_size=64, memory_budget_mb=8192)
    assert scorer.chunk(40, 40) == 64  # the embedded model: the cap
    llada = scorer.chunk(1536, 126464)
    assert llada == 8192 * 2**20 // (1536 * 126464 * 12) == 3
    assert scorer.chunk(10**6, 126464) == 1  # never none
    with pytest.raises(ValueError, match=r"`memory_budget_mb` \(0\) must be an int >= 1"):
        OracleScorer(memory_budget_mb=0)
    policy = build_policy("oracle", memory_budget_mb=1)
    assert policy._guided._scorer.memory_budget_mb == 1 and "memory_budget_mb=1" in repr(policy)


def test_a_probe_run_under_a_tight_budget_decodes_as_with_one_chunk(prompts):
    # more, smaller probe forwards: the same influences, so the same decode; more forwards
    den = MockDenoiser()
    wide = generate(den, prompts, build_policy("oracle", epsilon=0.3), gen_length=8)
    narrow = generate(den, prompts, build_policy("oracle", epsilon=0.3, chunk_size=1), gen_length=8)
    assert torch.equal(wide.tokens, narrow.tokens) and narrow.forwards > wide.forwards


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


def test_a_head_moved_by_a_decode_can_still_be_trained():
    # `generate` runs under inference mode and binds there: a head moved to the model's device
    # became inference tensors ("Inference tensors cannot be saved for backward")
    den = MockDenoiser()
    head = _plain_head(den)

    class OnMeta:  # the model "on an accelerator": the head (on the CPU) is moved to it
        device = torch.device("meta")
        fingerprint, hidden_size, capture_layers = den.fingerprint, den.hidden_size, None

    with torch.inference_mode():
        HeadScorer(head).bind(OnMeta())
    param = next(head.parameters())
    assert param.device == torch.device("meta") and not param.is_inference()
    loss = sum(p.sum() for p in head.parameters())
    loss.backward()  # trains (raised: inference tensors cannot be saved for backward)


def test_the_head_reads_the_models_confidence_under_the_eos_ranking_option():
    """`confidence_eos_eot_inf` zeroes EOS candidates' confidence so that confidence rules commit
    them last; the head read that zero as a feature it was never trained on (mean score of pairs
    touching an EOS 0.022 -> 0.066 with the shipped head)."""
    from depmask.decoding.loop import step_state

    den = HFDenoiser.from_pretrained(EMBEDDED)
    scorer = HeadScorer(head=str(EMBEDDED.parent / "tiny-tasks-head"))
    scorer.bind(den)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(4, den.vocab_size, (3, 24), generator=g)
    x[:, 8:] = den.mask_id
    out = den(x, need_hidden=True)
    in_block = torch.ones(3, 16, dtype=torch.bool)
    plain = step_state(out, x, in_block, 8, 24, mask_id=den.mask_id)
    eos = torch.tensor([int(plain.x0[0, 8])])  # a candidate id as "EOS": its confidence is zeroed
    option = step_state(out, x, in_block, 8, 24, mask_id=den.mask_id, eos=eos, confidence_eos_eot_inf=True)
    assert (option.confidence != plain.confidence).any()  # the ranking rule applies ...
    assert torch.equal(option.raw_confidence, plain.confidence)
    assert torch.equal(scorer.score_block(option), scorer.score_block(plain))  # ... the head's input does not change
