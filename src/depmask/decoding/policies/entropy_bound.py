"""EB-sampler (entropy-bounded unmasking): sort the masked positions of the block by entropy,
lowest first, and commit the largest prefix U with Σ_{i∈U} H_i − max_{i∈U} H_i ≤ γ (nats).

With ascending entropies the max of a prefix is its last element, so the rule is a cumulative
sum test; the first position always passes (its sum minus max is 0), so at least one commits.
"""

from __future__ import annotations

import torch

from depmask.decoding.policies.base import Policy
from depmask.decoding.state import StepState


class EntropyBound(Policy):
    name = "entropy_bound"

    def __init__(self, gamma: float = 0.1):
        if gamma < 0:
            raise ValueError(f"`gamma` ({gamma}) must be >= 0 (nats)")
        self.gamma = gamma

    def select(self, state: StepState) -> torch.Tensor:
        entropy = state.entropy.masked_fill(~state.mask, float("inf"))  # [b, l]
        sorted_h, order = entropy.sort(dim=1, stable=True)  # ascending, masked first
        finite = torch.isfinite(sorted_h)
        cum = torch.where(finite, sorted_h, 0).cumsum(dim=1)
        ok = finite & (cum - torch.where(finite, sorted_h, 0) <= self.gamma)  # [b, l]
        # a prefix: stop at the first failure
        keep_sorted = ok.long().cumprod(dim=1).bool()
        commit = torch.zeros_like(state.mask)
        commit.scatter_(1, order, keep_sorted)
        return commit & state.mask
