"""DUS, the dilated unmasking scheduler: a block is split into fixed, coarse-to-fine dilated
levels, and one level is committed per step: a block of size B takes one forward per level, about
log_base(B) − skip + 1 (five for B = 32, base 2, skip 1).

Levels (DUS's `dilated_unmask_levels` + `merge_last_level`, block-relative indices): the stride
starts at `B // base**skip` and is divided by `base` until it reaches 0; each level is every
not-yet-listed index that is a multiple of the stride; leftovers form a last level, and a last
level smaller than the one before it is merged into it. For B = 32, base 2, skip 1:
{0, 16}, {8, 24}, {4, 12, 20, 28}, … — five levels.

DUS also remasks, after every level but the last, the newly committed tokens whose confidence is
below `confidence_threshold` (0.3 in its README). Here that is the same decision made before the
commit: those positions are simply not committed. Unlike the reference code — whose remasked
positions belong to no later level and stay `[MASK]` in the output — they are carried to the next
level, and the last level commits every position of the block that is still masked. If no
position passes, the most confident among this level's and the carried ones is committed (the
at-least-one contract), which may be a carried position rather than one of the level's.

At temperature > 0 the reference computes the confidence from the Gumbel-perturbed logits; here,
as for every policy, it is the untempered softmax at the sampled token (`sampling.py`).
"""

from __future__ import annotations

import numbers
from functools import lru_cache

import torch

from depmask.decoding.policies.base import Policy, commit_top
from depmask.decoding.state import StepState


@lru_cache(maxsize=64)
def dilated_levels(block_length: int, base: int = 2, skip: int = 1) -> tuple[tuple[int, ...], ...]:
    """The dilated levels of a block, block-relative, coarse to fine."""
    if base == 1:
        return (tuple(range(block_length)),)
    stride = block_length // (base**skip)
    levels: list[list[int]] = []
    seen: set[int] = set()
    while stride >= 1:
        level = [i for i in range(0, block_length, stride) if i not in seen]
        if level:
            levels.append(level)
            seen.update(level)
        stride //= base
    rest = [i for i in range(block_length) if i not in seen]
    if rest:
        levels.append(rest)
    if len(levels) > 1 and len(levels[-1]) < len(levels[-2]):
        last = levels.pop()
        levels[-1] = sorted(levels[-1] + last)
    return tuple(tuple(lv) for lv in levels)


class Dilated(Policy):
    name = "dilated"

    # skip 0: DUS's `dilated_unmask_levels` refuses it too (it would add a level holding index 0 alone)
    # ints: `block_length // base**skip` is a stride (a float one failed in `range` at the first step)
    _knob_checks = {"base": (lambda v: isinstance(v, numbers.Integral) and v >= 1, "be an int >= 1"),
                    "skip": (lambda v: isinstance(v, numbers.Integral) and v >= 1, "be an int >= 1"),
                    "confidence_threshold": (lambda v: 0 <= v <= 1, "lie in [0, 1]")}

    def __init__(self, base: int = 2, skip: int = 1, confidence_threshold: float = 0.3):
        self.base, self.skip, self.confidence_threshold = base, skip, confidence_threshold

    def select(self, state: StepState) -> torch.Tensor:
        s, e = state.block_start, state.block_end
        levels = dilated_levels(e - s, self.base, self.skip)
        if state.step >= len(levels) - 1:
            return state.mask.clone()  # the last level: everything still masked in the block
        upto = torch.zeros(e - s, dtype=torch.bool, device=state.mask.device)
        for lv in levels[: state.step + 1]:  # this level plus earlier positions left masked
            upto[list(lv)] = True
        group = torch.zeros_like(state.mask)
        group[:, s:e] = upto
        group &= state.mask
        group = torch.where(group.any(1, keepdim=True), group, state.mask)  # level already done
        passing = group & (state.confidence >= self.confidence_threshold)
        forced = commit_top(state.confidence, group, torch.ones_like(state.num_masked))
        return passing | forced
