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

    def __init__(self, threshold: float = 0.9):
        if not 0 < threshold <= 1:
            raise ValueError(f"`threshold` ({threshold}) must lie in (0, 1]")
        self.threshold = threshold

    def select(self, state: StepState) -> torch.Tensor:
        top = commit_top(state.confidence, state.mask, torch.ones_like(state.num_masked))
        return top | (state.mask & (state.confidence >= self.threshold))
