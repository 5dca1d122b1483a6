"""`tensor_cache`: an `lru_cache` for small constant tensors (index ranges, eye masks) that steps
aside while torch traces the code.

Decoding and the dependency head rebuild the same `arange` / `eye` tensors at every step; caching
them saves an operation each. While `torch.compile` or `torch.export` traces that code the tensors
must be built inside the graph instead: an export runs the Python for real on fake tensors, so a
plain `lru_cache` would keep a fake tensor with a symbolic shape and hand it to every later eager
call. Under tracing the wrapped function is called directly, and nothing is cached.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable[..., torch.Tensor])


def tensor_cache(fn: F, maxsize: int = 64) -> F:
    """`fn` cached on its (hashable) arguments, except while torch compiles or exports."""
    cached = lru_cache(maxsize=maxsize)(fn)

    @wraps(fn)
    def call(*args):
        if torch.compiler.is_compiling():  # True under torch.compile and torch.export tracing
            return fn(*args)
        return cached(*args)

    call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    call.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]
