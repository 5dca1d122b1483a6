"""`Guided`: the dependency-guided policy, any crossing of units × rule × scorer from config; the
`clad`, `demask` and `oracle` presets are thin wrappers around it (`clad.py`, `demask.py`,
`oracle.py`), so every difference between them comes from the knobs, not the plumbing.

Per step: the scorer estimates `D[b, l, l]` (`decoding/scorers/`), the shared greedy selector
turns the block's slice into a commit mask (`decoding/selector.py`). What the loop must provide
(hidden states, attention, probe forwards) follows from the scorer, so `needs_hidden`,
`needs_attention` and `needs_probe` are instance properties here. `bind(denoiser)` is called by
`generate()` before decoding; it lets a learned head refuse a model it was not trained for.

CLAD's edge floor with ≤ 2 units is 1.2 / L, L the number of keys a query attends over: counted
per row from the captured attention (keys with non-zero weight, i.e. the canvas minus its left
padding); without attention, the row's own unpadded length (`StepState.keys`, set by the loop; the
canvas width for a state built without it).
"""

from __future__ import annotations

import numbers
import warnings
from os import PathLike
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from depmask.decoding.clusters import candidate_positions, most_confident
from depmask.decoding.policies.base import Policy
from depmask.decoding.scorers import build_scorer
from depmask.decoding.selector import RULES, UNIFORM_MULTIPLE, UNITS, greedy_select
from depmask.decoding.state import StepState


class Guided(Policy):
    """Greedy dependency-guided selection (see `decoding/selector.py` for the rules).

    Args:
        units: `token`, or `cluster` (confidence-induced clusters, CLAD's CICs).
        rule: `budget` (DEMASK: summed pairwise dependency ≤ ε) or `conflict` (CLAD: no conflict
            edge between chosen units; on CLAD's mutual top-1 matching the maximum-weight
            independent set, exact; with `edge_threshold`, a greedy one). The first unit is always
            committed and is exempt from the rule: under `budget` the most confident unit (a
            cluster's inner pairs may exceed ε by themselves), under `conflict` the largest.
        scorer: `attention`, `head`, `oracle` or `none`.
        epsilon: the dependency budget ε of the budget rule.
        threshold: confidence floor τ — masked positions below it are never candidates (the most
            confident one always is); for cluster units it also draws the clusters (at τ = 0 the
            block's masked run is one cluster, committed whole: a warning says so).
        skip_blocked: budget rule: skip a unit that would break the budget and keep visiting
            (default: stop there, so the chosen set is a confidence-ordered prefix).
        edge_threshold: conflict rule: an edge joins every pair of units whose affinity reaches it
            (default None: CLAD's mutual top-1 edges).
        edge_floor: conflict rule: affinity an edge needs when there are ≤ 2 units (default None:
            CLAD's 1.2 / L).
        head: checkpoint directory of a trained `DependencyHead` (head scorer).
        chunk_size: perturbed copies per forward (oracle scorer), at most.
        memory_budget_mb: fewer copies per forward when their logits would take more (oracle
            scorer; 64 copies of a 1,536-token canvas at LLaDA's vocabulary hold ~100 GB).
    """

    name = "guided"

    def __init__(
        self,
        units: Literal["token", "cluster"] = "token",
        rule: Literal["budget", "conflict"] = "budget",
        scorer: Literal["attention", "head", "oracle", "none"] = "attention",
        epsilon: float = 0.1,
        threshold: float = 0.0,
        skip_blocked: bool = False,
        edge_threshold: float | None = None,
        edge_floor: float | None = None,
        head: str | None = None,
        chunk_size: int = 64,
        memory_budget_mb: int = 8192,
    ):
        for knob, value in (("units", units), ("rule", rule), ("epsilon", epsilon), ("threshold", threshold),
                            ("edge_threshold", edge_threshold), ("edge_floor", edge_floor)):
            self._check_knob(knob, value)  # all of them before any warning or the scorer's build
        if units == "cluster" and threshold == 0:  # CLAD's rule read literally; rarely what is meant
            warnings.warn("`units` 'cluster' with `threshold` 0: every masked position is a candidate, the block's "
                          "masked run is one cluster, and the forced first unit commits it whole in one forward "
                          "whatever the rule and ε; give τ > 0 (CLAD's default 0.7)", stacklevel=2)
        if head is not None and scorer != "head":  # it was dropped without a word, a missing path too
            raise ValueError(f"`head` ({head if isinstance(head, str) else type(head).__name__!s}) is given but "
                             f"`scorer` is {scorer!r}; a head scores only with `scorer` 'head'")
        self.units, self.rule, self.scorer = units, rule, scorer
        self.epsilon, self.threshold, self.skip_blocked = epsilon, threshold, skip_blocked
        self.edge_threshold, self.edge_floor = edge_threshold, edge_floor
        built = build_scorer(scorer, head=head, chunk_size=chunk_size, memory_budget_mb=memory_budget_mb)
        self.head = _describe(head) if scorer == "head" else None
        self.chunk_size, self.memory_budget_mb = chunk_size, memory_budget_mb
        self._scorer = built  # last: from here on `__setattr__` guards the knobs

    # what the scorer object was built from: set after it, they changed the table, not the decode
    _BUILT_FROM: ClassVar[tuple[str, ...]] = ("scorer", "head", "chunk_size", "memory_budget_mb")
    _knob_checks = {
        "units": (lambda v: v in UNITS, f"be one of {UNITS}"),
        "rule": (lambda v: v in RULES, f"be one of {RULES}"),
        "epsilon": (lambda v: _number(v) and v >= 0, "be >= 0"),
        "threshold": (lambda v: _number(v) and 0 <= v <= 1, "lie in [0, 1]"),
        "edge_threshold": (lambda v: v is None or (_number(v) and v >= 0), "be >= 0 or None"),
        "edge_floor": (lambda v: v is None or (_number(v) and v >= 0), "be >= 0 or None"),
    }

    def __setattr__(self, name: str, value) -> None:
        if name == "skip_blocked" and not isinstance(value, bool):  # "false" would read as on
            raise ValueError(f"`skip_blocked` ({value!r}) must be True or False")
        if "_scorer" in vars(self):  # built: a knob set later is checked, and the scorer's are fixed
            if name in self._BUILT_FROM and vars(self).get(name) != value:
                raise AttributeError(f"Guided.{name} is fixed once the policy is built (its scorer was built "
                                     f"from it); build a new policy for another {name}")
        super().__setattr__(name, value)  # the base class checks the knob's range

    # what the loop must provide follows from the scorer (the base class has class constants)
    @property
    def needs_hidden(self) -> bool:  # type: ignore[override]
        return self._scorer.needs_hidden

    @property
    def needs_attention(self) -> bool:  # type: ignore[override]
        return self._scorer.needs_attention

    @property
    def needs_probe(self) -> bool:  # type: ignore[override]
        return self._scorer.needs_probe

    @property
    def state_fields(self) -> tuple[str, ...] | None:  # type: ignore[override]
        if self._scorer.needs_probe:  # reads the probe and the block's log-probabilities too
            return None
        # `_keys` reads the attention exactly when the scorer captured it (else the rows' lengths)
        fields = ("mask", "confidence", *(f for f in self._scorer.state_fields if f not in ("mask", "confidence")))
        reads_keys = (self.rule == "conflict" and self.edge_threshold is None and self.edge_floor is None
                      and "attention" not in fields)
        return (*fields, "keys") if reads_keys else fields

    def check_inputs(self) -> None:
        self._scorer.check_inputs()

    def bind(self, denoiser) -> None:
        """Check the scorer against the model before decoding (a head trained for another model
        raises ValueError here) and move what it holds to the model's device."""
        self._scorer.bind(denoiser)

    def tensor_knobs(self) -> dict[str, float]:
        """ε and τ: the selector reads them only in comparisons and sums."""
        return {"epsilon": self.epsilon, "threshold": self.threshold}

    def select(self, state: StepState) -> torch.Tensor:
        return self.select_with(state)

    def select_with(self, state: StepState, epsilon: torch.Tensor | float | None = None,
                    threshold: torch.Tensor | float | None = None) -> torch.Tensor:
        """`select`, with ε and τ given as 0-d tensors when a compiled step takes them as inputs."""
        epsilon = self.epsilon if epsilon is None else epsilon
        threshold = self.threshold if threshold is None else threshold
        s, e = state.block_start, state.block_end
        mask = state.mask[:, s:e]  # [b, c]
        conf = state.confidence[:, s:e]  # [b, c]
        top = most_confident(conf, mask)  # [b, 1]
        cand = candidate_positions(conf, mask, threshold, top)  # [b, c]
        candidates = None
        if self._scorer.needs_probe:  # only a probing scorer saves work by skipping the others
            candidates = torch.zeros_like(state.mask)  # [b, l]
            candidates[:, s:e] = cand
        dep = self._scorer.score_block(state, candidates)  # [b, c, c]
        floor = None
        if self.rule == "conflict" and self.edge_threshold is None:
            floor = self.edge_floor if self.edge_floor is not None else UNIFORM_MULTIPLE / _keys(state, s + top)
        chosen = greedy_select(
            dep, conf, mask, units=self.units, rule=self.rule, threshold=threshold,
            epsilon=epsilon, skip_blocked=self.skip_blocked, edge_threshold=self.edge_threshold,
            edge_floor=floor, candidates=cand,
        )  # [b, c]
        return F.pad(chosen, (s, state.mask.shape[1] - e))  # [b, l]


def check_fraction(name: str, value) -> None:
    """Refuse a preset's knob that is not a number in [0, 1] (τ, the confidence floor), naming it."""
    try:
        ok = _number(value) and 0 <= value <= 1
    except TypeError:
        raise ValueError(f"`{name}` ({value!r}) must be a number") from None
    if not ok:
        raise ValueError(f"`{name}` ({value}) must lie in [0, 1]")


def _number(value) -> bool:
    """A real number, not a bool (a knob's check raises "must be a number" otherwise)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(value)
    return True


class GuidedPreset(Policy):
    """A named preset of `Guided`: keeps its own knobs (for tables and YAML) and delegates.

    Setting a preset knob after construction (`policy.epsilon = 0.3`) sets the `Guided` attribute
    it stands for (`_forwarded`), so the decode follows what `knobs()` and the tables show (it used
    to change the table only). The head, and knobs that are no `Guided` attribute (the oracle's
    `chunk_size`, `memory_budget_mb`), are fixed: build a new policy to change them."""

    _guided: Guided
    _forwarded: ClassVar[dict[str, str]] = {}  # preset knob -> the `Guided` attribute it sets
    _fixed: ClassVar[tuple[str, ...]] = ("head", "chunk_size", "memory_budget_mb")

    def __setattr__(self, name: str, value) -> None:
        guided = vars(self).get("_guided")
        if guided is not None and name in self._fixed and name in vars(self) and vars(self)[name] is not value:
            raise AttributeError(f"{type(self).__name__}.{name} is fixed once the policy is built; build a new "
                                 f"policy for another {name}")
        if guided is not None and name in self._forwarded:  # first: `Guided` checks the value
            try:
                setattr(guided, self._forwarded[name], value)
            except ValueError as err:  # named as the preset's knob (`confidence_floor`, not `threshold`)
                raise ValueError(str(err).replace(f"`{self._forwarded[name]}`", f"`{name}`", 1)) from None
        super().__setattr__(name, value)

    @property
    def needs_hidden(self) -> bool:  # type: ignore[override]
        return self._guided.needs_hidden

    @property
    def needs_attention(self) -> bool:  # type: ignore[override]
        return self._guided.needs_attention

    @property
    def needs_probe(self) -> bool:  # type: ignore[override]
        return self._guided.needs_probe

    @property
    def state_fields(self) -> tuple[str, ...] | None:  # type: ignore[override]
        return self._guided.state_fields

    def check_inputs(self) -> None:
        self._guided.check_inputs()

    def bind(self, denoiser) -> None:
        self._guided.bind(denoiser)

    def tensor_knobs(self) -> dict[str, float]:
        return self._guided.tensor_knobs()

    def select(self, state: StepState) -> torch.Tensor:
        return self._guided.select(state)

    def select_with(self, state: StepState, **knobs: torch.Tensor) -> torch.Tensor:
        return self._guided.select_with(state, **knobs)


def _keys(state: StepState, query: torch.Tensor) -> torch.Tensor | float:
    """[b] L: keys each row attends over — keys with non-zero attention from `query` [b, 1] (its
    most confident masked position) — or, when no attention was captured, the row's own unpadded
    length (`state.keys`; the canvas width, padding included, would tie a row's floor to the longest
    prompt of its batch), or the canvas width for a state built without it."""
    if state.attention is None:
        return float(state.mask.shape[1]) if state.keys is None else state.keys.to(torch.float64)
    row = state.attention.gather(1, query[:, :, None].expand(-1, 1, state.attention.shape[2]))  # [b, 1, l]
    return (row[:, 0] > 0).sum(dim=1).to(torch.float64)


def _describe(head: str | PathLike | Any | None) -> str | None:
    """The `head` knob as shown in tables: the path, or the class of an in-memory head."""
    if head is None or isinstance(head, (str, PathLike)):
        return None if head is None else str(head)
    return f"<{type(head).__name__}>"
