"""`pairwise_influence` against values computed by hand from the module's formula:
tv[i, j] = Σ_k w_jk TV(p_i(·|x), p_i(·|x, x_j := v_jk)), kl[i, j] = Σ_k w_jk KL(p_i(·|x, x_j := v_jk) ‖ p_i(·|x))."""

import math

import pytest
import torch

from depmask.decoding.influence import pairwise_influence

MASK = 2  # vocabulary {0, 1, 2 = mask}; the canvas is two masked positions


def _forward(table):
    """Position i's distribution is `table[token at the other position]`; logits = log-probs."""

    def forward(copies, states):
        n, l = copies.shape
        out = torch.empty(n, l, 3)
        for c in range(n):
            for i in range(l):
                out[c, i] = torch.tensor(table[int(copies[c, 1 - i])]).log()
        return out

    return forward


def _run(table, values, weights=None):
    tokens = torch.tensor([[MASK, MASK]])
    base = torch.tensor(table[MASK]).log().expand(1, 2, 3)
    return pairwise_influence(_forward(table), tokens, torch.tensor([[0, 1]]), torch.tensor([[True, True]]),
                              base, torch.tensor(values), weights)


def test_two_values_of_a_position_are_averaged_with_equal_weights_by_default():
    """With `weights` None each of the k values weighs 1/k: counting each fully (weight 1) doubles
    the influence of k = 2."""
    table = {MASK: [0.5, 0.25, 0.25], 0: [0.8, 0.1, 0.1], 1: [0.4, 0.3, 0.3]}
    tv_a = 0.5 * (0.3 + 0.15 + 0.15)  # TV(base, p | other := 0) = 0.3
    tv_b = 0.5 * (0.1 + 0.05 + 0.05)  # TV(base, p | other := 1) = 0.1
    kl_a = 0.8 * math.log(0.8 / 0.5) + 2 * 0.1 * math.log(0.1 / 0.25)
    kl_b = 0.4 * math.log(0.4 / 0.5) + 2 * 0.3 * math.log(0.3 / 0.25)
    inf = _run(table, [[[0, 1], [0, 1]]])
    want_tv = torch.tensor([[0.0, (tv_a + tv_b) / 2], [(tv_a + tv_b) / 2, 0.0]])
    want_kl = torch.tensor([[0.0, (kl_a + kl_b) / 2], [(kl_a + kl_b) / 2, 0.0]])
    assert torch.allclose(inf.tv[0], want_tv, atol=1e-5)
    assert torch.allclose(inf.kl[0], want_kl, atol=1e-5)
    assert inf.copies.tolist() == [4]
    weighted = _run(table, [[[0, 1], [0, 1]]], torch.tensor([[[0.25, 0.75], [1.0, 0.0]]]))
    # column j is the fixed position: row 0 moves when position 1 is fixed (its weights 1, 0)
    assert weighted.tv[0, 0, 1].item() == pytest.approx(tv_a, abs=1e-5)
    assert weighted.tv[0, 1, 0].item() == pytest.approx(0.25 * tv_a + 0.75 * tv_b, abs=1e-5)


def test_a_value_the_model_rules_out_adds_nothing_to_the_kl():
    """A value with probability 0 (a -inf logit, e.g. EOS forbidden) contributes 0 · log 0 = 0 to
    KL(p' ‖ p), not NaN: KL([.5, .5, 0] ‖ [.25, .25, .5]) = ln 2."""
    table = {MASK: [0.25, 0.25, 0.5], 0: [0.5, 0.5, 0.0]}
    inf = _run(table, [[[0], [0]]])
    assert torch.allclose(inf.kl[0], torch.tensor([[0.0, math.log(2)], [math.log(2), 0.0]]), atol=1e-5)
    assert torch.allclose(inf.tv[0], torch.tensor([[0.0, 0.5], [0.5, 0.0]]), atol=1e-6)
