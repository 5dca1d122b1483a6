"""Compiled selection: `compiled_select(policy)` returns `policy.select` compiled with
`torch.compile` (`generate(..., compile_select=True)` or `"jit"`, `depmask decode --compile_select
true`); `compiled_select(policy, "aot")` an ahead-of-time compiled one (`aot.py`, `"aot"`).

Why: a policy's step is dozens of small tensor operations on `[b, c]` and `[b, c, c]` tensors.
On a small model (the embedded MDLM on CPU) or a GPU (one kernel launch each) their per-operation
latency, not their arithmetic, is most of the selection time; compiled, they fuse into a few
kernels. Selections agree with the eager ones up to floating-point reassociation inside fused
reductions (bit for bit on the embedded model and the test models).

Costs: the first step compiles (tens of seconds on a 2-core CPU, where a C/C++ compiler is
needed), and the first change of shape compiles once more, then for any size (torch's automatic
dynamic shapes: the loop passes only the rows that still have masks, so the batch shrinks as
rows finish). The compiled function is kept on the policy object (per mode), so every `generate`
call with the same policy reuses it. Not for policies whose scorer probes the model
(`needs_probe`, the oracle): their step runs model forwards, which this must not compile.

Which: on the embedded model on CPU a `torch.compile`d call costs 130–200 µs right after a forward
(cold dynamo guards and wrappers), which eats most of what fusing saves; "aot" has no such cost
but compiles once per block geometry and only takes policies that declare `state_fields`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from depmask.decoding.policies.base import Policy

RECOMPILE_LIMIT = 32  # shapes × policy objects per process before torch falls back to eager
MODES = ("jit", "aot")


def compile_mode(value: bool | str | None) -> str | None:
    """`compile_select` as given → None (eager), "jit" (`torch.compile`) or "aot" (AOTInductor)."""
    if value is None or value is False or value == "none":
        return None
    if value is True:
        return "jit"
    if value in MODES:
        return value
    raise ValueError(f"`compile_select` ({value!r}) must be False / 'none', True / 'jit', or 'aot'")


@functools.cache
def check_compiler() -> None:
    """Refuse compiling where torch's inductor finds no working C++ compiler (it failed at the
    first step, after the model had loaded, in a traceback of a hundred lines). Checked once per
    process when it passes."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as err:  # torch._inductor.exc.InvalidCxxCompiler
        raise ValueError(f"`compile_select` needs a C++ compiler (g++ or clang++ on the PATH, or `CXX`), and torch "
                         f"found none that works ({type(err).__name__}: {err}); install one, or decode without "
                         "compiling") from None


def compiled_select(policy: Policy, mode: str = "jit") -> Callable[..., torch.Tensor]:
    """`policy.select`, compiled once per policy object and mode: "jit" (`torch.compile`) or
    "aot" (`aot.AotSelect`)."""
    if not isinstance(policy, Policy):
        raise TypeError(f"`policy` must be a depmask Policy, got {type(policy).__name__}")
    normalized = compile_mode(mode)  # True → "jit"
    if normalized is None:
        raise ValueError(f"`mode` ({mode!r}) must be one of {MODES}")
    mode = normalized
    if policy.needs_probe:
        raise ValueError(f"`compile_select` is for policies that run no model forwards; {policy.name!r} "
                         "probes the model at every step (needs_probe) — decode it without compiling")
    compiled = vars(policy).setdefault("_compiled_select", {})  # dies with the policy
    if mode not in compiled:
        check_compiler()
        compiled[mode] = _aot(policy) if mode == "aot" else _jit(policy)
    elif mode == "aot":
        compiled[mode].refresh()  # a knob or weight changed since: its libraries are built again
    return compiled[mode]


def compile_mode_for(policy: Policy, mode: bool | str | None) -> str | None:
    """The mode `policy`'s step can be compiled with when `mode` is asked for: `mode` itself, or
    None (eager) where it cannot — a policy that probes the model (the oracle), and with "aot" a
    policy that declares no `state_fields`. For runners that apply one setting to many policies
    (`depmask eval decode --compile_select`); `compiled_select` itself refuses those instead."""
    if not isinstance(policy, Policy):
        raise TypeError(f"`policy` must be a depmask Policy, got {type(policy).__name__}")
    mode = compile_mode(mode)
    if mode is None or policy.needs_probe or (mode == "aot" and policy.state_fields is None):
        return None
    return mode


def _jit(policy: Policy) -> Callable[..., torch.Tensor]:
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(policy.select)


def _aot(policy: Policy) -> Callable[..., torch.Tensor]:
    from depmask.decoding.aot import AotSelect  # lazy: torch.export is only needed here

    return AotSelect(policy)
