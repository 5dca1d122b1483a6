"""Fast-dLLM's threshold rule (`get_transfer_index` with `threshold`): commit every masked position
of the block whose confidence is at least τ, and always the most confident one.

Fast-dLLM ranks all masked positions with `topk` and drops ranks ≥ 1 whose confidence is `< τ`;
this is the same set. The step budget is ignored: a block ends when it has no mask left.
"""

from __future__ import annotations

import torch

from depmask.decoding.policies.base import Policy, commit_top
from depmask.decoding.state import StepState


class Threshold(Policy):
    name = "threshold"

    _knob_checks = {"threshold": (lambda v: 0 < v <= 1, "lie in (0, 1]")}

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def select(self, state: StepState) -> torch.Tensor:
        top = commit_top(state.confidence, state.mask, torch.ones_like(state.num_masked))
        return top | (state.mask & (state.confidence >= self.threshold))
