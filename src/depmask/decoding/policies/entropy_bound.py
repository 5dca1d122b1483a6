"""EB-sampler (entropy-bounded unmasking): sort the masked positions of the block by entropy,
lowest first, and commit the largest prefix U with Σ_{i∈U} H_i − max_{i∈U} H_i ≤ γ (nats).

With ascending entropies the max of a prefix is its last element, so the rule is a cumulative
sum test; the first position always passes (its sum minus max is 0), so at least one commits.

Against the DUS repository's port (`generate_eb_sampler`, the one reference code found):
- γ is in nats here; the port measures entropy in bits (`log2`), so its γ is this one / ln 2
  (γ 0.1 here is 0.144 there). The rule is the same; only the knob's scale differs.
- The port runs at most `steps_per_block` forwards per block and moves on with positions still
  masked; here a block always runs to the end (the loop's contract). With `steps = gen_length`,
  as every shipped config sets it, the cap never binds, since each step commits at least one.
- At temperature > 0 the port takes the entropy of the Gumbel-perturbed logits; here it is the
  untempered softmax's (`sampling.py`), as for every policy.
"""

from __future__ import annotations

import torch

from depmask.decoding.policies.base import Policy
from depmask.decoding.state import StepState


class EntropyBound(Policy):
    name = "entropy_bound"
    ranks_by_confidence = False

    _knob_checks = {"gamma": (lambda v: v >= 0, "be >= 0 (nats)")}  # NaN fails too

    def __init__(self, gamma: float = 0.1):
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
