"""The `head` scorer (learned, DEMASK): a trained `depmask.predictor.DependencyHead` reads the
final hidden states of this forward at the masked positions of the block and predicts their
pairwise influence, `D[i, j] ≈ TV(p_i(· | x), p_i(· | x, x_j := x̂_j))`.

The head sees every masked position of the block (the set it was trained on), with their
confidence and entropy — and, for a head built with `use_attention`, the captured attention among
the block's positions (then the scorer asks the loop for attention, as `clad` does). It reads the
block's columns in place — `valid` is the block's mask, the committed columns are padding slots —
instead of gathering the masked positions to the front: the head is equivariant to where its
padding sits (padded slots are zeroed and masked out of its attention, distances come from canvas
positions), so the prediction is the same and the step saves the sort, the gathers and the
scatter back. `score_block` returns that `[b, c, c]` matrix.
`bind(denoiser)` refuses a head trained for another model (fingerprint or hidden size) before
decoding starts, and moves the head to the denoiser's device. The head is loaded when the scorer
is built (from a directory), so a wrong path fails at once.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import torch

from depmask.decoding.clusters import cached_arange
from depmask.decoding.scorers.base import Scorer, block_to_canvas
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
    state_fields = ("hidden", "raw_confidence", "entropy")

    def __init__(self, head: str | PathLike | Any | None = None):
        self.head = load_head(head)
        if getattr(self.head, "use_attention", False):
            self.needs_attention = True  # shadows the class default: this head reads attention
            self.state_fields = (*HeadScorer.state_fields, "attention")

    def _require(self) -> Any:
        if self.head is None:
            raise ValueError("the head scorer needs a trained DependencyHead: pass `head=DIR`, a `depmask train` "
                             "checkpoint (`--policy.head DIR` for `depmask decode`, `knobs: {head: DIR}` in an "
                             "`eval decode` sweep)")
        return self.head

    def check_inputs(self) -> None:
        self._require()

    def bind(self, denoiser) -> None:
        head = self._require()
        check = getattr(head, "check_compatible", None)
        if check is not None:
            check(denoiser)  # ValueError naming both fingerprints / hidden sizes
        if isinstance(head, torch.nn.Module) and _elsewhere(head, torch.device(denoiser.device)):
            # outside inference mode (`generate` runs in it): moved there, the head's parameters became
            # inference tensors, and the user's head could no longer be trained
            with torch.inference_mode(False):
                head.to(denoiser.device)  # `generate()` binds once per call: no module walk when it is there

    def score(self, state: StepState, candidates: torch.Tensor | None = None) -> torch.Tensor:
        return block_to_canvas(self.score_block(state, candidates), state)  # [b, l, l]

    def score_block(self, state: StepState, candidates: torch.Tensor | None = None) -> torch.Tensor:
        head = self._require()
        if state.hidden is None:
            raise ValueError("the head scorer needs `state.hidden`; the loop provides it for policies "
                             "whose `needs_hidden` is True")
        s, e = state.block_start, state.block_end
        valid = state.mask[:, s:e]  # [b, c]: masked columns are the head's slots, the rest padding
        positions = cached_arange(s, e, valid.device).expand_as(valid)  # [b, c]
        # the model's own confidence, as in training (`confidence_eos_eot_inf` zeroes EOS candidates'
        # in `confidence`, a ranking rule: fed to the head it moved every pair touching an EOS)
        conf = state.raw_confidence if state.raw_confidence is not None else state.confidence
        args = (state.hidden[:, s:e], positions, valid, conf[:, s:e], state.entropy[:, s:e])
        if self.needs_attention:
            if state.attention is None:
                raise ValueError("this head reads attention (use_attention=True) but `state.attention` is "
                                 "None; the loop captures it for policies whose `needs_attention` is True")
            args = (*args, state.attention[:, s:e, s:e])
        pred = head.predict(*args)  # [b, c, c], 0 on pairs touching a padded slot and on the diagonal
        return pred.to(device=valid.device, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"HeadScorer(head={type(self.head).__name__ if self.head is not None else None})"


def _elsewhere(module: torch.nn.Module, device: torch.device) -> bool:
    """Whether `module` (its first parameter: a head is moved whole) is not on `device`: 0.05 ms
    where a no-op `module.to(device)` walks every submodule, 0.2–0.6 ms per decode for the small
    head on CPU between decodes (0.03–0.09 ms per step of the 7-step sudoku4 benchmark decode)."""
    first = next(module.parameters(), None)
    return first is not None and first.device != device
