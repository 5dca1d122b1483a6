"""Argument types shared by the benchmark scripts. argparse names the flag in their errors, e.g.
`argument --repeats: must be an int >= 1, got '0'`."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _checked(text: str, convert: Callable[[str], float], ok: Callable[[float], bool], expected: str):
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    if not ok(value):  # `not` so that a nan fails too
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def count(text: str) -> int:
    """Counts (repeats, batch sizes, examples, shapes): an int >= 1."""
    return _checked(text, int, lambda v: v >= 1, "an int >= 1")


def natural(text: str) -> int:
    """An int >= 0 (e.g. `--threads`, where 0 means "leave as is")."""
    return _checked(text, int, lambda v: v >= 0, "an int >= 0")


def positive(text: str) -> float:
    """A time or size that must be > 0 (e.g. a measured forward in ms)."""
    return _checked(text, float, lambda v: v > 0, "a number > 0")
