"""Fast-dLLM's factor rule (`get_transfer_index_dynamic`): with the masked positions of the block
sorted by confidence c_1 ≥ c_2 ≥ …, commit the largest top n whose every rank k ≤ n has
c_k ≥ 1 − f / (k + 1) (1-based; rank 1 always passes), with the reference's last-rank edge rule.

Faithful to the reference code, including its edge rule: the scan stops at the first failing
rank n+1 and commits n; if no rank fails, or only the *last* rank fails, every masked position
of the block is committed (the reference bumps the stop index at the last rank).
"""

from __future__ import annotations

import torch

from depmask.decoding.policies.base import Policy, commit_top
from depmask.decoding.state import StepState


class Factor(Policy):
    name = "factor"

    _knob_checks = {"factor": (lambda v: v > 0, "be > 0")}  # NaN fails too

    def __init__(self, factor: float = 1.0):
        self.factor = factor

    def select(self, state: StepState) -> torch.Tensor:
        conf = state.masked_confidence()  # [b, l]
        sorted_c = conf.sort(dim=1, descending=True).values  # masked first
        num = state.num_masked  # [b]
        ranks = torch.arange(1, conf.shape[1] + 1, device=conf.device, dtype=torch.float64)
        thresh = 1 - self.factor / (ranks + 1)  # [l]: rank n needs c_n >= 1 − f/(n+1)
        thresh[0] = -1.0
        valid = ranks[None, :] <= num[:, None]  # [b, l]
        fail = valid & (sorted_c < thresh[None, :])
        first_fail = torch.where(
            fail.any(1), fail.double().argmax(1).long(), num
        )  # 0-based index of the first failing rank, or num if none
        count = torch.where(first_fail >= num - 1, num, first_fail)  # the reference's edge rule
        return commit_top(state.confidence, state.mask, count)
