"""LLaDA's random remasking: `n_t` uniformly random masked positions of the block, with the same
even schedule as `low_confidence`. Randomness comes only from `state.generator`.
"""

from __future__ import annotations

import torch

from depmask.decoding.policies.base import Policy, commit_top
from depmask.decoding.schedule import llada_count
from depmask.decoding.state import StepState


class Random(Policy):
    name = "random"
    ranks_by_confidence = False
    uses_generator = True

    def select(self, state: StepState) -> torch.Tensor:
        count = llada_count(state.block_masked, state.num_masked, state.step, state.steps_per_block)
        score = torch.rand(
            state.mask.shape, device=state.mask.device, generator=state.generator
        )  # [b, l]
        return commit_top(score, state.mask, count)
