"""Ahead-of-time compiled selection: `AotSelect(policy)`, a policy's `select` exported with
`torch.export` and compiled by AOTInductor into a shared library
(`generate(..., compile_select="aot")`, `depmask decode --compile_select aot`).

Why, next to `torch.compile` (`compile.py`): on a small model on CPU, a `torch.compile`d function
costs 130–200 µs per call when it runs right after a model forward (its dynamo guards and
wrappers are cold), which on the embedded MDLM is 3–4.5 % of a forward before any work is done.
An AOTInductor library is called without dynamo, and here without the package's Python wrapper
too (it re-parses its pytree specs on every call): `clad`'s whole step then costs about a quarter
of its eager time (README, "Benchmarks").

What it compiles: the policy's `select` on a `StepState` rebuilt from the tensor fields the policy
declares it reads (`Policy.state_fields`; the other fields are None, so reading one fails while
exporting, not silently), its float knobs (`Policy.tensor_knobs`: ε and τ of the dependency-guided
policies, as 0-d float64 tensors) and the block bounds, which are baked in as distances from the
end of the canvas. One library per block geometry (those distances, and each field's shape beyond
the batch and the canvas, dtype and device), compiled on the first step that needs it. The batch is
dynamic, so rows leaving the batch reuse it, and so is the canvas length, so batches of other
prompt widths (which move the blocks) reuse it too; a batch whose block starts at column 0 (empty
prompts) gets a library of its own, with a fixed canvas. Since ε and τ are inputs, a sweep over
them compiles once, and every policy of the sweep loads that library from the disk cache. The other
knobs (units, rule, `skip_blocked`, edge settings) and any trained weights are baked in. Changing
them on the policy after a library was built (a knob set, a head's `load_state_dict` or `train()`)
is noticed when the step is next fetched for a decode (`compiled_select`, once per `generate()`):
the libraries in memory are dropped and built again (a library of the new step may come from the
disk cache). Before, the old libraries kept deciding.

Costs: about 10–20 s of compiling per geometry on a 2-core CPU (a C++ compiler is needed), so
semi-autoregressive decoding with `n` blocks compiles `n` times. Not for policies that probe the
model (the oracle) or that declare no `state_fields` (their step reads the step counters, which
change every step).

Cache: each library is kept on disk, under `$DEPMASK_AOT_CACHE` (default
`$XDG_CACHE_HOME/depmask/aot`, else `~/.cache/depmask/aot`; `off` for none), keyed by what the
library computes — the exported graph's code (the baked knobs and block bounds are literals in it),
every weight and constant it holds, the input shapes beyond the batch, the torch version and the
CPU's vector ISA and feature flags or the GPU's model. A later process that exports the same step
loads it instead of compiling (the export itself, about a second, is still paid). Each library
has its SHA-256 beside it (`.sha256`, written after it); one whose bytes differ from it, or that
fails to load, is compiled again and replaced. Inputs are made contiguous before a library sees
them (it reads them by the strides it was traced with, unchecked). A process's first library of
each device type is loaded in a child process first (`aot_probe.py`: on one GPU machine loading
any library killed Python).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from depmask.decoding.aot_probe import check_loads
from depmask.decoding.policies.base import Policy
from depmask.decoding.stamp import PolicyStamp
from depmask.decoding.state import StepState

_TRACE_NOISE = r"(`isinstance\(treespec, LeafSpec\)` is deprecated|`torch\._prims_common\.check` is deprecated)"
_CACHE_FORMAT = "depmask-aot-2"  # bump when how libraries are compiled or cached changes
CACHE_ENV = "DEPMASK_AOT_CACHE"


class _Step(torch.nn.Module):
    """`policy.select` as a module of the declared state tensors, for one block geometry: the
    block's distances from the end of the canvas (`tail_start`, `tail_end`), so that its bounds
    follow the canvas length — a dynamic dimension — and one library serves every prompt width."""

    def __init__(self, policy: Policy, fields: tuple[str, ...], knobs: tuple[str, ...], tail_start: int,
                 tail_end: int):
        super().__init__()
        self.policy, self.fields, self.knobs = policy, fields, knobs
        self.tail_start, self.tail_end = tail_start, tail_end

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        n = len(self.fields)
        canvas = tensors[0].shape[1]
        values = {f.name: None for f in dataclasses.fields(StepState)}
        values.update(zip(self.fields, tensors[:n]), block_start=canvas - self.tail_start,
                      block_end=canvas - self.tail_end)
        return self.policy.select_with(StepState(**values), **dict(zip(self.knobs, tensors[n:])))


def _canvas_dims(field: str) -> tuple[int, ...]:
    """The dimensions of a state field that run over the canvas: the second of every field
    (`[b, l, ...]`), the third of the attention (`[b, l, l]`), none of the rows' lengths (`[b]`)."""
    return (1, 2) if field == "attention" else () if field == "keys" else (1,)


class AotSelect:
    """`select(state) -> commit [b, l]`, run from AOTInductor libraries (see the module docstring).

    Raises ValueError for a policy that probes the model or declares no `state_fields`, and when
    a declared field is missing from a state.
    """

    def __init__(self, policy: Policy):
        if not isinstance(policy, Policy):
            raise TypeError(f"`policy` must be a depmask Policy, got {type(policy).__name__}")
        if policy.needs_probe:
            raise ValueError(f"`compile_select` is for policies that run no model forwards; {policy.name!r} "
                             "probes the model at every step (needs_probe) — decode it without compiling")
        if policy.state_fields is None:
            raise ValueError(f"policy {policy.name!r} does not declare the state it reads (`state_fields`), "
                             "which ahead-of-time compiling needs; use compile_select='jit' (torch.compile)")
        self.policy, self.fields = policy, tuple(policy.state_fields)
        self.knobs = tuple(policy.tensor_knobs())  # inputs of every library, after the fields
        self._knob_inputs: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self._runners: dict[tuple, object] = {}
        self._stamper = PolicyStamp()
        self._stamp = self._stamper(policy)
        self.loaded = 0  # libraries taken from the disk cache instead of compiled
        self._dir = tempfile.TemporaryDirectory(prefix="depmask-aot-")  # removed with this object

    def refresh(self) -> bool:
        """Drop the libraries built so far when the policy changed since (its other knobs, or the
        values, dtype or mode of a parameter it holds); True if it did. `compiled_select` calls it each
        time it hands this step to a decode."""
        stamp = self._stamper(self.policy)
        if stamp == self._stamp:
            return False
        self.fields, self.knobs = tuple(self.policy.state_fields), tuple(self.policy.tensor_knobs())
        self._runners.clear()
        self._knob_inputs.clear()
        self._stamp = stamp
        return True

    def __call__(self, state: StepState) -> torch.Tensor:
        tensors = self._inputs(state)
        canvas, dynamic = state.mask.shape[1], state.block_start > 0  # an empty prompt: a fixed canvas
        key = (canvas - state.block_start, canvas - state.block_end, dynamic,
               tuple((self._shape(f, t, dynamic), t.dtype, t.device) for f, t in zip(self.fields, tensors)))
        run = self._runners.get(key)
        knobs = self._knob_tensors(tensors[0].device)
        if run is None:
            run = self._runners[key] = self._compile(tensors, knobs, key)
        return run([*tensors, *knobs])[0]

    def _knob_tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The policy's tensor knobs as 0-d float64 tensors on `device`, read from the policy on
        every call (made once per value)."""
        values = tuple(float(v) for v in self.policy.tensor_knobs().values())
        key = (values, device)
        made = self._knob_inputs.get(key)
        if made is None:
            made = self._knob_inputs[key] = tuple(torch.tensor(v, dtype=torch.float64, device=device)
                                                  for v in values)
        return made

    @staticmethod
    def _shape(field: str, tensor: torch.Tensor, dynamic: bool) -> tuple:
        """The shape beyond the batch, with the canvas dimensions left out when they are dynamic:
        what a library fixes."""
        dims = _canvas_dims(field) if dynamic else ()
        return tuple(None if i in dims else n for i, n in enumerate(tensor.shape) if i)

    @property
    def geometries(self) -> int:
        """How many libraries have been compiled so far."""
        return len(self._runners)

    def _inputs(self, state: StepState) -> tuple[torch.Tensor, ...]:
        tensors = tuple(getattr(state, name) for name in self.fields)
        missing = [name for name, t in zip(self.fields, tensors) if t is None]
        if missing:
            raise ValueError(f"policy {self.policy.name!r} reads state fields {missing}, which this step "
                             "does not have (the loop provides them when the policy's needs_* say so)")
        # one tensor given for two fields (`raw_confidence` left unset is `confidence`): a copy,
        # so that no two inputs of a library alias; and contiguous, as the library was traced (it
        # reads its inputs by the strides it was compiled for, and does not check them: a
        # denoiser's transposed view of its hidden states was read as another matrix)
        return tuple((t.clone() if any(t is u for u in tensors[:i]) else t).contiguous()
                     for i, t in enumerate(tensors))

    def _compile(self, tensors: tuple[torch.Tensor, ...], knobs: tuple[torch.Tensor, ...], geometry: tuple):
        tail_start, tail_end, dynamic_canvas, _ = geometry  # `__call__`'s key
        step = _Step(self.policy, self.fields, self.knobs, tail_start, tail_end)
        if tensors[0].shape[0] == 1:  # trace with two rows, or export specialises the batch to 1
            tensors = tuple(torch.cat([t, t]) for t in tensors)
        batch = torch.export.Dim("batch", min=1)
        dims = {}
        if dynamic_canvas:  # at least one prompt column before the block
            length = torch.export.Dim("canvas", min=tail_start + 1)
            dims = {f: dict.fromkeys(_canvas_dims(f), length) for f in self.fields}
        dynamic = (*({0: batch, **dims.get(f, {})} for f in self.fields), *({} for _ in knobs))
        path = Path(self._dir.name) / f"select-{len(self._runners)}.pt2"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TRACE_NOISE)
            exported = torch.export.export(step, (*tensors, *knobs), dynamic_shapes=(dynamic,))
            device_type = tensors[0].device.type
            cached = _cached_path(exported, geometry, tensors[0].device)
            compiled = _load(cached, device_type) if cached is not None else None
            if compiled is not None:
                self.loaded += 1
            else:
                package = torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
                check_loads(package, device_type)  # a library that crashes the process it loads in
                compiled = torch._inductor.aoti_load_package(package)
                if cached is not None:
                    _store(Path(package), cached)
        # the library's own entry point: the Python wrapper re-parses the call's pytree specs from
        # JSON on every call (~10 µs warm, several times that right after a forward); `select`
        # takes flat tensors and returns one, so there is nothing to (un)flatten
        out_spec = torch.utils._pytree.treespec_loads(compiled.loader.get_call_spec()[1])
        if not out_spec.is_leaf():
            raise RuntimeError(f"policy {self.policy.name!r}: select must return one tensor, exported {out_spec}")
        return compiled.loader.boxed_run


def cache_dir() -> Path | None:
    """Where compiled libraries are kept (see the module docstring); None when caching is off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "false", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "depmask" / "aot"


def _cached_path(exported, geometry: tuple, device: torch.device) -> Path | None:
    """The cache file of this exported step of this `geometry` (`AotSelect`'s key: the block's
    distances from the canvas end, whether the canvas is dynamic, the fields' fixed shapes, dtypes
    and devices), or None when caching is off."""
    root = cache_dir()
    if root is None:
        return None
    if device.type == "cuda":
        target = torch.cuda.get_device_name(device)
    else:  # the vector ISA the kernels are generated for, and the CPU's features: `-march=native`
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        target = f"{platform.machine()} {pick_vec_isa()} {_cpu_features()}"
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{torch.__version__}|{device.type}|{target}".encode())
    for name, module in exported.graph_module.named_modules():  # the graph and any subgraph (loops, conditions)
        if isinstance(module, torch.fx.GraphModule):
            digest.update(f"|{name}\n{module.code}".encode())
    digest.update(f"|{exported.graph_signature}|{exported.range_constraints}|{geometry}".encode())
    for name, value in sorted({**exported.state_dict, **exported.constants}.items()):
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu").contiguous()
            digest.update(f"|{name} {tuple(value.shape)} {value.dtype}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # a script object: its repr is all we have
            digest.update(f"|{name} {value!r}".encode())
    return root / f"select-{digest.hexdigest()[:40]}.pt2"


@functools.cache
def _cpu_features() -> str:
    """A digest of this CPU's feature flags (Linux `/proc/cpuinfo`: x86's `flags`, ARM's
    `Features`; empty elsewhere): libraries are built for the machine they are compiled on
    (`-march=native`), and two CPUs that report the same vector ISA may differ in other
    instructions (avx512_bf16; ARM's bf16, i8mm)."""
    try:
        return features_digest(Path("/proc/cpuinfo").read_text())
    except OSError:
        return ""


def features_digest(cpuinfo: str) -> str:
    """A digest of the first feature list in a `/proc/cpuinfo` text ("" when it has none)."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if ":" in line and line.split(":", 1)[0].strip() in ("flags", "Features")), [])
    return hashlib.sha256(" ".join(sorted(set(flags))).encode()).hexdigest()[:12] if flags else ""


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _load(path: Path, device_type: str):
    """The package at `path`, or None when there is none, when its bytes are not those stored
    (its `.sha256` beside it: a damaged or edited library loads and decides wrongly), or when it
    does not load (it is then compiled again and replaced). Raises `check_loads`'s RuntimeError
    when loading libraries of `device_type` kills a process."""
    if not path.is_file():
        return None
    digest = _digest_path(path)
    if not digest.is_file():  # written after the package: one being stored, or from before the check
        return None
    if hashlib.sha256(path.read_bytes()).hexdigest() != digest.read_text().strip():
        warnings.warn(f"cached compiled selection {path} is not the library that was stored (its bytes changed); "
                      "compiling it again", stacklevel=3)
        return None
    check_loads(path, device_type)  # outside the `try`: a crash is not a damaged file to compile again
    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as err:  # a truncated or foreign file: recompile rather than fail the decode
        warnings.warn(f"cached compiled selection {path} did not load ({type(err).__name__}: {err}); "
                      "compiling it again", stacklevel=3)
        return None


def _store(package: Path, path: Path) -> None:
    """Copy a compiled package into the cache atomically (a partial file is never visible); a
    cache that cannot be written is skipped with a warning, the decode goes on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(package, partial)
        os.replace(partial, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()  # last: a package without it is not loaded
        partial.write_text(digest + "\n")
        os.replace(partial, _digest_path(path))
    except OSError as err:
        warnings.warn(f"could not write the compiled selection to the cache {path.parent} ({err}); "
                      f"set {CACHE_ENV}=off to stop trying", stacklevel=3)
