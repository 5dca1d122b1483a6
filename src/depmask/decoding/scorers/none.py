"""The `none` scorer: no dependency anywhere (all zeros).

Under the budget rule every candidate then joins (the selector degenerates to a confidence
threshold); under the conflict rule no edge forms. A control, not an estimate.
"""

from __future__ import annotations

import torch

from depmask.decoding.scorers.base import Scorer
from depmask.decoding.state import StepState


class NoneScorer(Scorer):
    name = "none"

    def score(self, state: StepState, candidates: torch.Tensor | None = None) -> torch.Tensor:
        b, l = state.mask.shape
        return torch.zeros((), dtype=torch.float32, device=state.mask.device).expand(b, l, l)  # [b, l, l]
