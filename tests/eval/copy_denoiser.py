"""A denoiser that copies a fixed distribution, and a policy that commits given positions: exact sub-additivity estimates by hand."""

from types import SimpleNamespace

import torch

from depmask.decoding.influence import denoiser_forward
from depmask.decoding.policies.base import Policy

MASK = 3  # vocabulary {0, 1, 2, mask}


P0 = [0.5, 0.3, 0.2]


class CopyDenoiser:
    """Position i has the fixed marginal `marginals[i]` over {0, 1, 2} until the position it
    copies (`copies[i]`) is set; then it holds that position's value with certainty."""

    def __init__(self, marginals: list[list[float]], copies: dict[int, int]):
        self.marginals, self.copies, self.mask_id = torch.tensor(marginals), copies, MASK

    def __call__(self, tokens, attention_mask=None, need_hidden=False, need_attention=False):
        b, l = tokens.shape
        probs = torch.zeros(b, l, 4)
        probs[:, :, :3] = self.marginals
        for i, j in self.copies.items():
            set_j = tokens[:, j] != MASK
            probs[set_j, i] = torch.nn.functional.one_hot(tokens[set_j, j], 4).float()
        return SimpleNamespace(logits=probs.clamp_min(1e-12).log())


def _inputs(den, positions=(0, 1)):
    tokens = torch.full((len(den.marginals),), MASK)
    pos = torch.tensor(positions)
    base = torch.log_softmax(den(tokens[None]).logits[0, pos], -1)  # [s, v]
    return denoiser_forward(den), tokens, pos, base


class Commit(Policy):
    """Commits the given canvas positions of every row."""

    name = "commit"

    def __init__(self, positions: list[int]):
        self.positions = positions

    def select(self, state):
        commit = torch.zeros_like(state.mask)
        commit[:, self.positions] = True
        return commit & state.mask
