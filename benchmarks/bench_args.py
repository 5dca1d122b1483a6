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
