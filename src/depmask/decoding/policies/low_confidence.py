"""LLaDA's low-confidence remasking: commit the `n_t` most confident masked positions of the
block, with `n_t` from LLaDA's even tokens-per-step schedule (`get_num_transfer_tokens`).
"""

from __future__ import annotations

import torch

from depmask.decoding.policies.base import Policy, commit_top
from depmask.decoding.schedule import llada_count
from depmask.decoding.state import StepState


class LowConfidence(Policy):
    name = "low_confidence"

    def select(self, state: StepState) -> torch.Tensor:
        count = llada_count(state.block_masked, state.num_masked, state.step, state.steps_per_block)
        return commit_top(state.confidence, state.mask, count)
