"""The policy contract and the one helper most policies share.

A policy is pure: `select(state) -> commit[b, l]` (bool). It commits at least one masked position
in every row that still has one, never an unmasked position, and uses no randomness but
`state.generator`. It never calls the model; the loop owns the model, blocks, batch and accounting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from depmask.decoding.state import StepState


class Policy:
    """Base class of every decoding policy (subclass it and implement `select`)."""

    name: ClassVar[str] = "policy"
    needs_hidden: ClassVar[bool] = False
    needs_attention: ClassVar[bool] = False
    needs_probe: ClassVar[bool] = False  # extra forwards via `state.probe` (counted in NFE)
    # draws from `state.generator` even at temperature 0 (`random`): runs seed one for it
    uses_generator: ClassVar[bool] = False
    # orders or thresholds positions by `state.confidence` (what `confidence_eos_eot_inf` acts on)
    ranks_by_confidence: ClassVar[bool] = True
    # the StepState tensor fields `select` reads besides the block bounds, when it reads nothing
    # else (no step counters, no generator): what ahead-of-time compiling feeds it (`aot.py`);
    # None: not declared
    state_fields: ClassVar[tuple[str, ...] | None] = None

    # knob -> (its check, what it must be): run at construction and whenever the knob is set, so
    # `policy.threshold = nan` after building is refused as `Threshold(threshold=nan)` is
    _knob_checks: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        self._check_knob(name, value)
        super().__setattr__(name, value)

    @classmethod
    def _check_knob(cls, name: str, value: Any) -> None:
        """Refuse `value` for knob `name` when its `_knob_checks` entry says no (NaN fails every
        comparison, a bool is no knob value; None or a string compared with a number is named as
        not a number)."""
        check = cls._knob_checks.get(name)
        if check is None:
            return
        ok, expected = check
        try:
            passed = not isinstance(value, bool) and bool(ok(value))
        except TypeError:  # None, a string compared with a number
            raise ValueError(f"`{name}` ({value!r}) must be a number") from None
        if not passed:
            raise ValueError(f"`{name}` ({value!r}) must {expected}")

    def select(self, state: StepState) -> torch.Tensor:  # [b, l] bool
        raise NotImplementedError

    def check_inputs(self) -> None:
        """Raise ValueError when the policy lacks something it needs to decode (a head-scored one
        without its head), so that commands refuse it before a model loads. Default: nothing."""

    def tensor_knobs(self) -> dict[str, float]:
        """The float knobs `select_with` also takes as 0-d tensors, with their values: knobs that
        `select` reads only in tensor arithmetic (no Python branch on them), so that a compiled
        step (`aot.py`) takes them as inputs and one library serves every value. Default: none."""
        return {}

    def select_with(self, state: StepState, **knobs: torch.Tensor) -> torch.Tensor:
        """`select` with some `tensor_knobs` given as 0-d tensors; the others keep their values."""
        unknown = sorted(set(knobs) - set(self.tensor_knobs()))
        if unknown:
            raise ValueError(f"policy {self.name!r} takes no tensor knobs {unknown}; it has "
                             f"{sorted(self.tensor_knobs())}")
        return self.select(state)

    def knobs(self) -> dict:
        """The policy's settings, for tables and `summary.json`."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.knobs().items())
        return f"{type(self).__name__}({args})"


def commit_top(
    score: torch.Tensor,  # [b, l] higher = committed first
    mask: torch.Tensor,  # [b, l] bool selectable
    count: torch.Tensor,  # [b] long how many to commit per row
) -> torch.Tensor:
    """[b, l] bool: the `count[r]` highest-scoring selectable positions of each row.

    Clamped to [1, number selectable] so the at-least-one contract holds. Ties go to the lower
    index (a stable sort), which is deterministic on every device.
    """
    num = mask.sum(dim=1)  # [b]
    count = torch.minimum(count.clamp_min(1), num)
    score = score.to(torch.float64).masked_fill(~mask, float("-inf"))
    order = score.argsort(dim=1, descending=True, stable=True)  # [b, l]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < count[:, None]) & mask
