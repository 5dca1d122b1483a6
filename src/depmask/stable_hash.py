"""`stable_int`: a hash of values that is the same in every process and on every machine (Python's
`hash` of a string is salted per process), for seeds and splits derived from ids."""

from __future__ import annotations

import hashlib


def stable_int(*parts: object) -> int:
    """The first 8 bytes of sha256 over the parts' `str`, joined by U+001F, as an int in [0, 2^64)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")
