"""LLaDA's low-confidence remasking: commit the `n_t` most confident masked positions of the
block, with `n_t` from LLaDA's even tokens-per-step schedule (`get_num_transfer_tokens`).

Confidence is p(x0) from a float64 softmax of the float32 logits, as LLaDA's `generate.py` computed
it when this was written (and Fast-dLLM still does). LLaDA's current code takes the softmax of the
model's bf16 logits, where near-certain positions tie (0.9991 and 0.9999 are both 1.0 in bf16) and
`topk` breaks the tie by index: there, near-ties can commit in another order than here.
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
