"""The oracle scorer: the exact empirical influence at the step, its probe forwards, chunking and memory budget."""

import pytest
import torch

from depmask.decoding import StepState, build_policy, generate
from depmask.decoding.influence import denoiser_forward, gather_positions, pairwise_influence
from depmask.decoding.scorers import OracleScorer
from tests.decoding.mock import Counting, MockDenoiser
from tests.decoding.states import random_state


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
