"""Compiled selection: `compiled_select(policy)` returns `policy.select` compiled with
`torch.compile` (`generate(..., compile_select=True)`, `depmask decode --compile_select true`).

Why: a policy's step is dozens of small tensor operations on `[b, c]` and `[b, c, c]` tensors.
On a small model (the embedded MDLM on CPU) or a GPU (one kernel launch each) their per-operation
latency, not their arithmetic, is most of the selection time; compiled, they fuse into a few
kernels. Selections agree with the eager ones up to floating-point reassociation inside fused
reductions (bit for bit on the embedded model and the test models).

Costs: the first step compiles (tens of seconds on a 2-core CPU, where a C/C++ compiler is
needed), and the first change of shape compiles once more, then for any size (torch's automatic
dynamic shapes: the loop passes only the rows that still have masks, so the batch shrinks as
rows finish). The compiled function is cached per policy object, so every `generate` call with
the same policy reuses it. Not for policies whose scorer probes the
model (`needs_probe`, the oracle): their step runs model forwards, which this must not compile.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch

from depmask.decoding.policies.base import Policy

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
RECOMPILE_LIMIT = 32  # shapes × policy objects per process before torch falls back to eager
# our `lru_cache` helpers (`cached_eye`, `cached_arange`, …) build constant index tensors; tracing
# through them, as dynamo does (with a warning per call site), is exactly right
_LRU_WARNING = r"Dynamo detected a call to a `functools\.lru_cache`-wrapped function at '(clusters|features|head|selector)\.py"


def compiled_select(policy: Policy) -> Callable[..., torch.Tensor]:
    """`policy.select`, compiled once per policy object (`torch.compile`)."""
    if not isinstance(policy, Policy):
        raise TypeError(f"`policy` must be a depmask Policy, got {type(policy).__name__}")
    if policy.needs_probe:
        raise ValueError(f"`compile_select` is for policies that run no model forwards; {policy.name!r} "
                         "probes the model at every step (needs_probe) — decode it without compiling")
    fn = _CACHE.get(policy)
    if fn is None:
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
        warnings.filterwarnings("ignore", message=_LRU_WARNING)
        fn = torch.compile(policy.select)
        _CACHE[policy] = fn
    return fn
