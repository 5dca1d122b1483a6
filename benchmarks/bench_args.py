"""Argument types shared by the benchmark scripts."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """An argparse `type` for counts (repeats, batch sizes, examples): an int >= 1. argparse names
    the flag in its error, e.g. `argument --repeats: must be an int >= 1, got '0'`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


def natural(text: str) -> int:
    """An argparse `type` for an int >= 0 (e.g. `--threads`, where 0 means "leave as is")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text!r}")
    return value


def positive(text: str) -> float:
    """An argparse `type` for a time or size that must be > 0 (e.g. a measured forward in ms)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value
