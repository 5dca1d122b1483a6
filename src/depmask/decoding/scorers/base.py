"""The dependency-scorer contract and the gather/scatter helpers the scorers share.

Shapes: `b` batch, `l` canvas, `c` columns of the current block, `m` slots (the selected masked
positions of the block, padded to the widest row).

`scorer.score(state, candidates) -> D[b, l, l]`: `D[i, j]` estimates how much committing position
`j` changes the model's prediction at position `i`. Only entries between masked positions of the
current block are meaningful; everything else is 0. `candidates` [b, l] (optional) names the
positions the selector may commit; a scorer may leave the rows and columns of other positions 0
(the oracle does, to spend fewer forwards). `scorer.score_block(state, candidates) -> [b, c, c]`
is the same matrix restricted to the block, `D[:, s:e, s:e]` — what the selector reads; the
default slices `score`, a scorer that works on the block overrides it and skips the canvas-sized
tensor. A scorer declares what the loop must provide (`needs_hidden`, `needs_attention`,
`needs_probe`); `bind(denoiser)` is called once before decoding, so a scorer tied to one model
can refuse another. Scorers never choose positions.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from depmask.decoding.state import StepState


class Scorer:
    """Base class of the dependency scorers (subclass it and implement `score`)."""

    name: ClassVar[str] = "scorer"
    needs_hidden: ClassVar[bool] = False
    needs_attention: ClassVar[bool] = False
    needs_probe: ClassVar[bool] = False
    # StepState tensor fields `score_block` reads besides `mask` and the block bounds
    state_fields: ClassVar[tuple[str, ...]] = ()

    def check_inputs(self) -> None:
        """Raise ValueError when the scorer lacks something it needs to decode (a head); checked
        before a model loads. Default: nothing is missing."""

    def bind(self, denoiser) -> None:
        """Called by `generate()` before the first forward; the default accepts any model."""

    def score(self, state: StepState, candidates: torch.Tensor | None = None) -> torch.Tensor:  # [b, l, l]
        raise NotImplementedError

    def score_block(self, state: StepState, candidates: torch.Tensor | None = None) -> torch.Tensor:  # [b, c, c]
        """`score(state, candidates)` restricted to the current block's rows and columns."""
        s, e = state.block_start, state.block_end
        return self.score(state, candidates)[:, s:e, s:e]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def block_slots(state: StepState, select: torch.Tensor | None = None):
    """The masked positions of the block (those in `select` [b, l] too, when given) as padded slots.

    Returns `order` [b, c] (block columns, selected ones first and in increasing order — a
    permutation, used to scatter back), `positions` [b, m] (canvas indices) and `valid` [b, m].
    """
    s, e = state.block_start, state.block_end
    chosen = state.mask[:, s:e] if select is None else state.mask[:, s:e] & select[:, s:e]  # [b, c]
    order = (~chosen).long().argsort(dim=1, stable=True)  # [b, c]: selected first
    count = chosen.sum(dim=1)  # [b]
    m = int(count.max()) if count.numel() else 0
    positions = s + order[:, :m]  # [b, m]
    valid = torch.arange(m, device=count.device)[None, :] < count[:, None]  # [b, m]
    return order, positions, valid


def scatter_block(values: torch.Tensor, order: torch.Tensor, state: StepState) -> torch.Tensor:
    """[b, m, m] slot-pair values (0 on padded slots) → [b, l, l] canvas matrix, 0 elsewhere."""
    b, l = state.mask.shape
    s, e = state.block_start, state.block_end
    c, m = e - s, values.shape[1]
    block = torch.zeros(b, c * c, dtype=torch.float32, device=state.mask.device)
    slot = order[:, :m]  # [b, m]: distinct block columns (a prefix of a permutation)
    index = (slot[:, :, None] * c + slot[:, None, :]).reshape(b, m * m)
    block.scatter_(1, index, values.to(device=block.device, dtype=block.dtype).reshape(b, m * m))
    out = torch.zeros(b, l, l, dtype=torch.float32, device=state.mask.device)
    out[:, s:e, s:e] = block.view(b, c, c)
    return out


def block_to_canvas(block: torch.Tensor, state: StepState) -> torch.Tensor:
    """[b, c, c] block matrix → [b, l, l] canvas matrix, 0 outside the block."""
    b, l = state.mask.shape
    s, e = state.block_start, state.block_end
    out = torch.zeros(b, l, l, dtype=block.dtype, device=block.device)
    out[:, s:e, s:e] = block
    return out
