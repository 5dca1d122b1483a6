"""`PolicyStamp`: what an ahead-of-time library bakes in besides its inputs, read once per decode.

A policy's AOT libraries (`aot.py`) hold its non-tensor knobs and the weights of the modules it
holds (a head) as constants. `compiled_select` compares a fresh stamp with the one the libraries
were built under each time it hands the step to a decode, and builds them again when it differs.

The stamp holds the knobs, the mode of every submodule, the dtype, device and shape of every
parameter and buffer, and their bytes, compared exactly. Bytes, not `Tensor._version`: writes
through `.data` (`p.data.copy_`, `vector_to_parameters`) do not move the version, and tensors
made under inference mode (a head moved to the model's device inside `generate`) have none.

Cost: the check runs once per `generate()` call, so on a small model it is part of the
selection overhead. A SHA-256 over the bytes, with the parameters gathered through
`Module.parameters()`, took 0.23 ms per decode with the shipped head (23 tensors, 53 KB) on one
CPU thread, about 1 % of a sudoku4 decode. Here the walk reads each submodule's own tensors, and
a contiguous CPU tensor's bytes are read through a NumPy view made once and kept while the tensor
keeps its address, dtype, shape and stride. The view reads the live memory, so an in-place write
is still seen. Other tensors (on a GPU, or not contiguous) are copied to the host at every check.
"""

from __future__ import annotations

import functools
import types

import numpy as np
import torch

from depmask.decoding.policies.base import Policy


def modules_of(obj) -> list[torch.nn.Module]:
    """The `nn.Module`s a policy holds (its head), found through its attributes at any depth
    (`__dict__` and `__slots__`), through lists, tuples, sets and dict values (an ensemble), and
    through `functools.partial`s, bound methods and closures: a preset holds its head three levels down (`Demask → _guided →
    _scorer → head`), and a wrapper around a head one more. Each object is visited once; a
    module's own submodules are its `modules()`; compiled steps are not walked, nor a denoiser
    (something with a `mask_id` and a `fingerprint`) that a custom head keeps from its check:
    its weights are no constants of the step, and stamping them would copy a whole model to the
    host at every decode."""
    found: list[torch.nn.Module] = []
    seen: set[int] = set()
    stack = [obj]
    while stack:
        value = stack.pop()
        if id(value) in seen or isinstance(value, (torch.Tensor, str, bytes, int, float, bool, type(None), type,
                                                   types.ModuleType)):
            continue
        seen.add(id(value))
        if hasattr(value, "mask_id") and hasattr(value, "fingerprint") and value is not obj:  # a denoiser
            continue
        if isinstance(value, torch.nn.Module):
            found.append(value)
        elif isinstance(value, dict):
            stack += list(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack += list(value)
        elif isinstance(value, functools.partial):
            stack += [value.func, *value.args, *value.keywords.values()]
        elif isinstance(value, types.MethodType):
            stack += [value.__self__, value.__func__]
        elif isinstance(value, types.FunctionType):  # what its closure holds
            for cell in value.__closure__ or ():
                try:
                    stack.append(cell.cell_contents)
                except ValueError:  # a cell not yet filled
                    pass
        else:
            if hasattr(value, "__dict__"):
                stack += [v for k, v in vars(value).items() if not k.startswith("_compiled")]
            for cls in type(value).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if isinstance(name, str) and name not in ("__dict__", "__weakref__") and hasattr(value, name):
                        stack.append(getattr(value, name))
    return found


class PolicyStamp:
    """`stamp(policy) -> tuple`: equal tuples mean the same knobs, modes and weights (see the module
    docstring). One object per compiled step: it keeps the byte views of the tensors it last read."""

    def __init__(self):
        self._views: dict[tuple, np.ndarray] = {}

    def __call__(self, policy: Policy) -> tuple:
        tensor = set(policy.tensor_knobs())  # inputs of the library, not baked in
        tensor |= {k for k, v in getattr(policy, "_forwarded", {}).items() if v in tensor}  # demask's floor: τ
        knobs = []
        for obj in (policy, vars(policy).get("_guided")):
            if isinstance(obj, Policy):
                knobs += [(k, repr(v)) for k, v in sorted(obj.knobs().items()) if k not in tensor]
        modes, held = [], []
        for top in modules_of(policy):
            for sub in top.modules():
                modes.append(sub.training)
                held += [t for t in (*sub._parameters.values(), *sub._buffers.values()) if t is not None]
        described, chunks, views = [], [], {}
        for t in held:
            key = (t.dtype, t.device, t.shape, t.stride(), t.data_ptr())
            described.append(key[:3])
            view = self._views.get(key)
            if view is None:
                view = t.detach().reshape(-1).view(torch.uint8).cpu().numpy()
                if t.device.type != "cpu" or not t.is_contiguous():  # a copy: read again next time
                    chunks.append(view)
                    continue
            views[key] = view
            chunks.append(view)
        self._views = views  # the views of tensors no longer held are let go
        return tuple(knobs), tuple(modes), tuple(described), b"".join(chunks)
