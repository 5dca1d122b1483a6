"""Model fingerprints: `name@revision:confighash-weightshash`, carried by every harvested record
and every head checkpoint so that data and heads are never silently used with another model.

The weight digest hashes a fixed sample of the parameters (the first and last tensors, and a few
between, up to 64k values each): cheap for an 8B model, and different for two trainings of the
same architecture. It does not detect a change that touches only unsampled values.

A model loaded from a safetensors checkpoint is hashed on the values *as stored* (`stored_tensors`),
not as loaded: a float32 checkpoint loaded in bfloat16 keeps its float32 fingerprint, so a head
trained on it is not refused for the dtype alone (`config_hash` ignores dtype for the same reason).
A tensor the checkpoint does not hold under the model's name (a tied output layer) is read under
the name of the tensor it shares storage with. A checkpoint in another format (`.bin`) is hashed as
loaded, so for it another dtype is another fingerprint. Where stored and loaded values agree (any
checkpoint loaded in its own dtype, and any bfloat16 one loaded in float32) the digest is the same
either way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

_IGNORED_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash",
                        "_attn_implementation_autoset", "attn_implementation"}


def config_hash(config) -> str:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    d = {k: v for k, v in d.items() if k not in _IGNORED_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


StoredTensors = Callable[[str, int], "torch.Tensor | None"]
"""`read(name, values)`: the first `values` values (flattened) of tensor `name` as stored, or None."""


@torch.no_grad()
def weights_hash(model: nn.Module, samples: int = 8, values: int = 65536,
                 stored: StoredTensors | None = None) -> str:
    """Digest of a fixed sample of `model`'s tensors; with `stored`, of their values as stored."""
    params = list(model.state_dict().items())
    if not params:
        return "noweights"
    pick = sorted({round(i * (len(params) - 1) / max(1, samples - 1)) for i in range(samples)})
    tied: dict[tuple, list[str]] = {}  # one storage under several names (a tied output layer)
    if stored is not None:
        for name, t in params:
            tied.setdefault((t.data_ptr(), tuple(t.shape)), []).append(name)
    h = hashlib.sha256()
    for i in pick:
        name, t = params[i]
        flat = t.detach().flatten()[:values]
        if stored is not None:  # as stored, under this name or, if tied, under the one the checkpoint keeps
            for alias in [name, *(n for n in tied.get((t.data_ptr(), tuple(t.shape)), []) if n != name)]:
                kept = stored(alias, values)
                if kept is not None and kept.numel() == flat.numel():
                    flat = kept
                    break
        h.update(name.encode())
        h.update(flat.to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:10]


def stored_tensors(path: str | Path | None, prefix: str = "") -> StoredTensors | None:
    """A reader of the safetensors checkpoint in directory `path` (one file or a sharded index), or
    None when there is none. Only the leading rows needed for `values` values are read. A name is
    looked up as is, then with `prefix.` added or removed (a base model loaded from a checkpoint
    that has a head, or the other way round)."""
    if path is None:
        return None
    path = Path(path)
    index, single = path / "model.safetensors.index.json", path / "model.safetensors"
    if index.is_file():
        files = {k: path / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    elif single.is_file():
        from safetensors import safe_open

        with safe_open(single, framework="pt") as f:
            files = dict.fromkeys(f.keys(), single)
    else:
        return None

    def read(name: str, values: int) -> torch.Tensor | None:
        from safetensors import safe_open

        candidates = [name]
        if prefix:
            candidates.append(name[len(prefix) + 1:] if name.startswith(prefix + ".") else f"{prefix}.{name}")
        key = next((k for k in candidates if k in files), None)
        if key is None:
            return None
        with safe_open(files[key], framework="pt") as f:
            part = f.get_slice(key)
            shape = part.get_shape()
            if not shape:
                return f.get_tensor(key).flatten()
            row = max(1, int(torch.Size(shape[1:]).numel()))
            return part[: -(-values // row)].flatten()[:values]

    return read


def revision_of(path: str | Path | None) -> str:
    """The hub snapshot hash when the path is a hub cache snapshot, else `local`."""
    m = re.search(r"snapshots/([0-9a-f]{40})", str(path or ""))
    return m.group(1)[:12] if m else "local"


def fingerprint(model: nn.Module, name: str | None = None, path: str | Path | None = None,
                stored: StoredTensors | None = None) -> str:
    """`name@revision:confighash-weightshash`; `stored` (see `stored_tensors`) hashes the weights as
    the checkpoint holds them rather than as loaded."""
    config = getattr(model, "config", None)
    name = name or (Path(str(path)).name if path else None) or getattr(config, "model_type", None) or type(model).__name__
    chash = config_hash(config) if config is not None else "noconfig"
    return f"{name}@{revision_of(path)}:{chash}-{weights_hash(model, stored=stored)}"


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two fingerprints name the same model: the same config and weights hashes (the part
    after `name@revision:`), wherever the checkpoint lies: a copy of a model in another directory
    is that model (its name and revision are where it was loaded from, not what it computes)."""
    if a is None or b is None:
        return a == b
    return a.split(":", 1)[-1] == b.split(":", 1)[-1] if ":" in a and ":" in b else a == b
