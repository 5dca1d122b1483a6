"""Empirical pairwise influence: batched equals one-at-a-time, independence gives zero, TV bounds."""

import pytest
import torch

from depmask.decoding.influence import (
    chunk_for_budget,
    denoiser_forward,
    gather_positions,
    pairwise_influence,
    top_values,
)
from depmask.models.denoiser import DenoiserOutput
from tests.decoding.mock import MockDenoiser


def _state(den, b=3, l=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, den.mask_id, (b, l), generator=g)
    tokens[:, 4:] = den.mask_id
    tokens[1, 7:] = torch.tensor([1, 2, 3])  # a row with fewer masks
    positions = torch.tensor([[4, 5, 6, 7, 8, 9], [4, 5, 6, 0, 0, 0], [4, 5, 6, 7, 8, 9]])
    valid = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    logits = den(tokens).logits
    base = torch.log_softmax(gather_positions(logits, positions), -1)  # [b, m, v]
    return tokens, positions, valid, base


def forward_of(den):
    return denoiser_forward(den)


def _one_at_a_time(den, tokens, positions, valid, base, values, weights):
    b, m = positions.shape
    tv = torch.zeros(b, m, m)
    kl = torch.zeros(b, m, m)
    for s in range(b):
        for j in range(m):
            if not valid[s, j]:
                continue
            for kk in range(values.shape[-1]):
                x = tokens[s : s + 1].clone()
                x[0, positions[s, j]] = values[s, j, kk]
                lp = torch.log_softmax(den(x).logits[0, positions[s]], -1)
                for i in range(m):
                    if i == j or not valid[s, i]:
                        continue
                    p, q = lp[i].exp(), base[s, i].exp()
                    tv[s, i, j] += weights[s, j, kk] * 0.5 * (p - q).abs().sum()
                    kl[s, i, j] += weights[s, j, kk] * (p * (lp[i] - base[s, i])).sum()
    return tv, kl


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_batched_equals_one_at_a_time(k, chunk):
    den = MockDenoiser(seed=1)
    tokens, positions, valid, base = _state(den)
    values, weights = top_values(base, k, forbid=den.mask_id)
    out = pairwise_influence(forward_of(den), tokens, positions, valid, base, values, weights, chunk_size=chunk)
    tv, kl = _one_at_a_time(den, tokens, positions, valid, base, values, weights)
    torch.testing.assert_close(out.tv, tv, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.kl, kl.clamp_min(0), atol=1e-5, rtol=1e-4)
    n_copies = int(valid.sum()) * k
    assert out.forwards == -(-n_copies // chunk)
    assert out.copies.tolist() == [int(v) * k for v in valid.sum(1)]


def test_tv_in_unit_interval_zero_diagonal_and_padding():
    den = MockDenoiser(seed=2, scale=20.0)
    tokens, positions, valid, base = _state(den)
    values, weights = top_values(base, 2)
    out = pairwise_influence(forward_of(den), tokens, positions, valid, base, values, weights)
    assert (out.tv >= 0).all() and (out.tv <= 1).all() and (out.kl >= 0).all()
    assert (out.tv.diagonal(dim1=1, dim2=2) == 0).all()
    pad = ~(valid[:, :, None] & valid[:, None, :])
    assert (out.tv[pad] == 0).all() and (out.kl[pad] == 0).all()
    assert out.tv.sum() > 0  # the mock's context mixing makes positions depend on each other


class _Independent:
    """Each position's logits depend on its own token and position only."""

    mask_id, vocab_size = 5, 6

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(16, 6, 6, generator=g)

    def __call__(self, tokens, attention_mask=None, need_hidden=False, need_attention=False):
        pos = torch.arange(tokens.shape[1])[None].expand_as(tokens)
        return DenoiserOutput(logits=self.table[pos, tokens])


def test_independent_model_has_zero_influence():
    den = _Independent()
    tokens = torch.full((2, 8), den.mask_id)
    tokens[:, :2] = 1
    positions = torch.arange(2, 8)[None].repeat(2, 1)
    valid = torch.ones(2, 6, dtype=torch.bool)
    base = torch.log_softmax(gather_positions(den(tokens).logits, positions), -1)
    values, weights = top_values(base, 3, forbid=den.mask_id)
    out = pairwise_influence(forward_of(den), tokens, positions, valid, base, values, weights, chunk_size=5)
    assert out.tv.abs().max() < 1e-6 and out.kl.abs().max() < 1e-6
    assert (values != den.mask_id).all()


def test_attention_mask_is_passed_to_copies():
    seen = []
    den = MockDenoiser(seed=0)

    tokens, positions, valid, base = _state(den)
    am = torch.ones_like(tokens, dtype=torch.bool)
    am[0, 0] = False
    inner = denoiser_forward(den, am)

    def forward(t, states):
        seen.append(states.clone())
        return inner(t, states)

    values, weights = top_values(base, 1)
    pairwise_influence(forward, tokens, positions, valid, base, values, weights, chunk_size=3)
    assert all(s.numel() <= 3 for s in seen)
    assert sorted(torch.cat(seen).tolist()) == sorted([0] * 6 + [1] * 3 + [2] * 5)


def test_bad_arguments_are_named():
    den = MockDenoiser()
    tokens, positions, valid, base = _state(den)
    with pytest.raises(ValueError, match="chunk_size"):
        pairwise_influence(forward_of(den), tokens, positions, valid, base, positions, chunk_size=0)
    with pytest.raises(ValueError, match="shapes disagree"):
        pairwise_influence(forward_of(den), tokens[:2], positions, valid, base, positions)
    with pytest.raises(ValueError, match="`k`"):
        top_values(base, 0)
    with pytest.raises(ValueError, match="budget_bytes"):
        chunk_for_budget(0, 10, 10)
    assert chunk_for_budget(10**9, 512, 126_464) == 1
    assert chunk_for_budget(10**9, 64, 30) > 1000


def test_top_values_are_the_most_likely_with_renormalised_weights():
    """The harvest's `topk` target weighs each value by its probability among the k kept (the
    tests fed `top_values`' own weights to both sides: un-renormalised weights passed)."""
    probs = torch.tensor([[[0.1, 0.4, 0.2, 0.25, 0.05]]])
    values, weights = top_values(probs.log(), 3, forbid=1)  # the most likely (1) is the mask id
    assert values.tolist() == [[[3, 2, 0]]]
    torch.testing.assert_close(weights, torch.tensor([[[0.25, 0.2, 0.1]]]) / 0.55)
