"""The `Denoiser` contract: one call is one forward pass, i.e. one NFE.

Shapes: `b` batch, `l` sequence, `v` vocabulary, `d` hidden size.

Every model that depmask decodes with — a Hugging Face checkpoint behind `HFDenoiser`, the
embedded tiny MDLM, a mock with hand-written logits in a test — satisfies this protocol. It does
not decide anything about decoding; it only maps a canvas of token ids to per-position
predictions aligned so that row *i* predicts token *i*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class DenoiserOutput:
    """What one forward returns.

    logits:    [b, l, v] float32; row i predicts token i (any one-position shift already undone).
    hidden:    [b, l, d] final hidden states aligned like `logits`, or None if not asked for.
    attention: [b, l, l] head- and layer-averaged attention over the capture layers, rows aligned
               like `logits`, or None if not asked for.
    """

    logits: torch.Tensor
    hidden: torch.Tensor | None = None
    attention: torch.Tensor | None = None


@runtime_checkable
class Denoiser(Protocol):
    """A frozen bidirectional masked denoiser."""

    mask_id: int
    eos_ids: tuple[int, ...]
    vocab_size: int
    hidden_size: int
    fingerprint: str

    @property
    def device(self) -> torch.device: ...

    def __call__(
        self,
        tokens: torch.Tensor,  # [b, l] long
        attention_mask: torch.Tensor | None = None,  # [b, l] bool/long, 1 = real token
        need_hidden: bool = False,
        need_attention: bool = False,
    ) -> DenoiserOutput: ...
