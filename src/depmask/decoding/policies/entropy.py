"""Dream's `entropy` algorithm: order masked positions by negative entropy (lowest entropy first)
and commit as many as Dream's step schedule says. Same schedule and the same departures from
Dream's code as `margin` (per-row count, at least one; untempered float64 scores; per block;
no `alg_temp`): see `margin.py`.
"""

from __future__ import annotations

import torch

from depmask.decoding.policies.base import Policy, commit_top
from depmask.decoding.schedule import dream_count
from depmask.decoding.state import StepState


class Entropy(Policy):
    name = "entropy"
    ranks_by_confidence = False

    _knob_checks = {"eps": (lambda v: 0 < v < 1, "lie in (0, 1)")}

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def select(self, state: StepState) -> torch.Tensor:
        count = dream_count(state.num_masked, state.step, state.steps_per_block, self.eps)
        return commit_top(-state.entropy, state.mask, count)
