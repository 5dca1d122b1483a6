"""The `attention` scorer (training-free, CLAD): the Denoiser's captured attention of this very
forward, `D[i, j] = A[i, j]` — how much query `i` attends to key `j`, head- and layer-averaged
over the capture layers (`models/attention_capture.py`). It costs no extra forward.
"""

from __future__ import annotations

import torch

from depmask.decoding.scorers.base import Scorer
from depmask.decoding.state import StepState


class AttentionScorer(Scorer):
    name = "attention"
    needs_attention = True
    state_fields = ("attention",)

    def score(self, state: StepState, candidates: torch.Tensor | None = None) -> torch.Tensor:
        if state.attention is None:
            raise ValueError("the attention scorer needs `state.attention`; the loop captures it for "
                             "policies whose `needs_attention` is True")
        return state.attention  # [b, l, l]
