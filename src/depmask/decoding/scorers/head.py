"""The `head` scorer (learned, DEMASK): a trained `depmask.predictor.DependencyHead` reads the
final hidden states of this forward at the masked positions of the block and predicts their
pairwise influence, `D[i, j] ≈ TV(p_i(· | x), p_i(· | x, x_j := x̂_j))`.

The head sees every masked position of the block (the set it was trained on), in canvas order,
with their confidence and entropy; its `[b, m, m]` prediction is scattered back to `[b, l, l]`.
`bind(denoiser)` refuses a head trained for another model (fingerprint or hidden size) before
decoding starts, and moves the head to the denoiser's device. The head is loaded when the scorer
is built (from a directory), so a wrong path fails at once.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import torch

from depmask.decoding.scorers.base import Scorer, block_slots, scatter_block
from depmask.decoding.state import StepState


def load_head(head: str | PathLike | Any | None) -> Any | None:
    """A `DependencyHead` from a checkpoint directory; an object with `.predict` is used as is."""
    if head is None or hasattr(head, "predict"):
        return head
    from depmask.predictor import DependencyHead  # lazy: decoding does not need the predictor

    return DependencyHead.from_pretrained(head)


class HeadScorer(Scorer):
    name = "head"
    needs_hidden = True

    def __init__(self, head: str | PathLike | Any | None = None):
        self.head = load_head(head)

    def _require(self) -> Any:
        if self.head is None:
            raise ValueError("the head scorer needs a trained DependencyHead: pass `head=DIR` "
                             "(on the command line `--policy.head DIR`), a `depmask train` checkpoint")
        return self.head

    def bind(self, denoiser) -> None:
        head = self._require()
        check = getattr(head, "check_compatible", None)
        if check is not None:
            check(denoiser)  # ValueError naming both fingerprints / hidden sizes
        if isinstance(head, torch.nn.Module):
            head.to(denoiser.device)

    def score(self, state: StepState, candidates: torch.Tensor | None = None) -> torch.Tensor:
        head = self._require()
        if state.hidden is None:
            raise ValueError("the head scorer needs `state.hidden`; the loop provides it for policies "
                             "whose `needs_hidden` is True")
        order, positions, valid = block_slots(state)  # all masked positions of the block
        hidden = state.hidden.gather(1, positions[:, :, None].expand(-1, -1, state.hidden.shape[-1]))  # [b, m, d]
        pred = head.predict(
            hidden, positions, valid,
            state.confidence.gather(1, positions), state.entropy.gather(1, positions),
        )  # [b, m, m]
        pred = pred * (valid[:, :, None] & valid[:, None, :]).to(pred.device)
        return scatter_block(pred, order, state)  # [b, l, l]

    def __repr__(self) -> str:
        return f"HeadScorer(head={type(self.head).__name__ if self.head is not None else None})"
