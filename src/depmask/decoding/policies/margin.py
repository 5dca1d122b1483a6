"""Dream's `topk_margin` algorithm: order masked positions by p(top-1) − p(top-2) and commit as
many as Dream's step schedule says (`int(n_masked · (1 − s/t))` on `linspace(1, eps, steps+1)`).

Departures from Dream's code, both deliberate: the count is per row (Dream averages the masked
count over the batch), and it is at least one (Dream can transfer zero tokens in a step, which
wastes a forward). Besides:
- The margin comes from the untempered softmax (Dream's from the tempered, top-p / top-k filtered
  one), in float64 (Dream ranks in the logits' dtype, bf16 for Dream-7B, so near-ties can order
  differently).
- Dream has no blocks: its candidates are every masked position and its schedule runs over the
  whole answer. Here, as for every policy, only the current block's positions are candidates and
  the schedule runs per block (`steps_per_block` over the block's masked count); with
  `block_length = gen_length` (one block) the two coincide.
- Dream's `alg_temp` (sampling positions instead of ranking them) is not implemented.
"""

from __future__ import annotations

import torch

from depmask.decoding.policies.base import Policy, commit_top
from depmask.decoding.schedule import dream_count
from depmask.decoding.state import StepState


class Margin(Policy):
    name = "margin"
    ranks_by_confidence = False

    _knob_checks = {"eps": (lambda v: 0 < v < 1, "lie in (0, 1)")}

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def select(self, state: StepState) -> torch.Tensor:
        count = dream_count(state.num_masked, state.step, state.steps_per_block, self.eps)
        return commit_top(state.margin, state.mask, count)
