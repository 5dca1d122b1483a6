"""Decoding policies, one file each, and the registry that maps preset names to classes."""

import inspect
import numbers
import types
import typing

from depmask.decoding.policies.base import Policy, commit_top
from depmask.decoding.policies.clad import Clad
from depmask.decoding.policies.demask import Demask
from depmask.decoding.policies.dilated import Dilated
from depmask.decoding.policies.entropy import Entropy
from depmask.decoding.policies.entropy_bound import EntropyBound
from depmask.decoding.policies.factor import Factor
from depmask.decoding.policies.guided import Guided
from depmask.decoding.policies.low_confidence import LowConfidence
from depmask.decoding.policies.margin import Margin
from depmask.decoding.policies.oracle import Oracle
from depmask.decoding.policies.random import Random
from depmask.decoding.policies.threshold import Threshold

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (LowConfidence, Random, Threshold, Factor, EntropyBound, Dilated, Margin, Entropy,
                Clad, Demask, Oracle, Guided)
}


def build_policy(name: str, **knobs) -> Policy:
    """Build a policy from its preset name (`"threshold"`) or class name (`"Threshold"`)."""
    cls = POLICIES.get(name) or {c.__name__: c for c in POLICIES.values()}.get(name)
    if cls is None:
        raise ValueError(f"unknown policy {name!r}; expected one of {sorted(POLICIES)}")
    accepted = policy_knobs(cls)
    unknown = sorted(set(knobs) - set(accepted)) if accepted is not None else []
    if unknown:
        raise ValueError(f"policy {cls.name!r} has no knob {', '.join(map(repr, unknown))}; "
                         f"its knobs: {', '.join(accepted) or 'none'}")
    _check_knob_types(cls, knobs)
    return cls(**knobs)


# numbers.Real / Integral: NumPy scalars from a Python-built sweep pass too
_NUMBERS = {float: ("a number", (numbers.Real,)), int: ("an int", (numbers.Integral,)), bool: ("true or false", (bool,))}


def _check_knob_types(cls: type[Policy], knobs: dict) -> None:
    """A knob annotated as a number or a bool must be one (a config or a `name:knob=value` spec
    can hand over a string, which would fail inside the policy's range check as a bare
    TypeError); other annotations are left to the policy."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve here: nothing to check against
        return
    for name, value in knobs.items():
        hint = hints.get(name)
        args = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else ()
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), None) if len(args) == 2 and optional else hint
        if base not in _NUMBERS or (value is None and optional):
            continue
        what, kinds = _NUMBERS[base]
        if not isinstance(value, kinds) or (base is not bool and isinstance(value, bool)):
            raise ValueError(f"policy {cls.name!r}: knob `{name}` ({value!r}) must be {what}"
                             + (" or None" if optional else ""))


def check_policy(name: str, knobs: dict, where: str) -> Policy:
    """Build the policy once, so that a bad preset, knob or head fails before a long job starts;
    the error (ValueError, or FileNotFoundError for a missing head) starts with `where`. Returns
    the policy built."""
    try:
        policy = build_policy(name, **knobs)
        policy.check_inputs()  # a head-scored policy without its head, too
    except (ValueError, TypeError, FileNotFoundError) as err:
        kind = FileNotFoundError if isinstance(err, FileNotFoundError) else ValueError
        raise kind(f"{where}: {err}") from err
    return policy


def policy_knobs(cls: type[Policy]) -> list[str] | None:
    """The knob names `cls(...)` accepts, in signature order; None when it takes `**kwargs`."""
    if cls.__init__ is object.__init__:
        return []
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # past `self`
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


__all__ = [
    "POLICIES",
    "Clad",
    "Demask",
    "Dilated",
    "Entropy",
    "EntropyBound",
    "Factor",
    "Guided",
    "LowConfidence",
    "Margin",
    "Oracle",
    "Policy",
    "Random",
    "Threshold",
    "build_policy",
    "check_policy",
    "commit_top",
    "policy_knobs",
]
