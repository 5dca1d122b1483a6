"""The head's pair inputs and lean scorer against their documented formulas, value for value: the
signed distance index, the bilinear scorer's scale, and the capture-layer check's negative indices."""

import math
from types import SimpleNamespace

import pytest
import torch

from depmask.predictor.features import relative_index
from depmask.predictor.io import check_capture_layers
from depmask.predictor.pair_scorers import BilinearScorer


def test_the_distance_index_is_column_minus_row_clipped_and_shifted():
    """Row i is the slot whose prediction moves, column j the committed one: index pos[j] − pos[i]
    (+ max_distance). Its sign was pinned by nothing (translation invariance cannot see it), and
    the shipped heads' predictions move by up to 0.63 when it flips."""
    positions = torch.tensor([[3, 5, 40, 0]])
    valid = torch.tensor([[True, True, True, False]])
    rel = relative_index(positions, valid, max_distance=8)
    assert rel.tolist() == [[[8, 10, 16, 8],  # 3 → 5 is +2; 3 → 40 is +37, clipped to +8; padding: 0
                             [6, 8, 16, 8],
                             [0, 0, 8, 8],  # 40 → 3 is −37, clipped to −8
                             [8, 8, 8, 8]]]


def test_the_lean_scorer_is_a_scaled_bilinear_term_plus_a_distance_bias():
    """`q_i·k_j / sqrt(dim) + b(rel)`, as its docstring says; without the scale a saved lean head
    scores otherwise after loading, and no test compared the formula."""
    torch.manual_seed(0)
    dim, num_rel = 4, 5
    scorer = BilinearScorer(dim, num_rel)
    with torch.no_grad():
        scorer.rel_logit.weight.copy_(torch.arange(num_rel, dtype=torch.float32)[:, None] / 10)
    u = torch.randn(1, 3, dim)
    rel = torch.tensor([[[2, 3, 4], [1, 2, 3], [0, 1, 2]]])
    q, k = u @ scorer.qk.weight[:dim].T, u @ scorer.qk.weight[dim:].T  # [1, 3, dim] each
    want = torch.empty(1, 3, 3)
    for i in range(3):
        for j in range(3):
            want[0, i, j] = float(q[0, i] @ k[0, j]) / math.sqrt(dim) + rel[0, i, j].item() / 10
    torch.testing.assert_close(scorer(u, rel), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("trained", "captured", "ok"), [([-1], [3], True), ([-4, -3], [0, 1], True),
                                                         ([-1], [2], False), ([3], [3], True)])
def test_capture_layers_are_compared_modulo_the_depth(trained, captured, ok):
    """A harvest's `capture_layers: [-1]` is the last layer: a head trained on it fits a model that
    captures layer n − 1 (only [0] and None were tested, so dropping the modulo went unseen)."""
    denoiser = SimpleNamespace(capture=SimpleNamespace(stack=[None] * 4, layers=captured))
    if ok:
        check_capture_layers(True, {"capture_layers": trained}, denoiser)
    else:
        with pytest.raises(ValueError, match=r"reads attention averaged over layers \[3\]"):
            check_capture_layers(True, {"capture_layers": trained}, denoiser)
