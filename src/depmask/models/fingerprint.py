"""Model fingerprints: `name@revision:confighash-weightshash`, carried by every harvested record
and every head checkpoint so that data and heads are never silently used with another model.

The weight digest hashes a fixed sample of the parameters (the first and last tensors, and a few
between, up to 64k values each): cheap for an 8B model, and different for two trainings of the
same architecture. It does not detect a change that touches only unsampled values.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from torch import nn

_IGNORED_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash",
                        "_attn_implementation_autoset", "attn_implementation"}


def config_hash(config) -> str:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    d = {k: v for k, v in d.items() if k not in _IGNORED_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


@torch.no_grad()
def weights_hash(model: nn.Module, samples: int = 8, values: int = 65536) -> str:
    params = list(model.state_dict().items())
    if not params:
        return "noweights"
    pick = sorted({round(i * (len(params) - 1) / max(1, samples - 1)) for i in range(samples)})
    h = hashlib.sha256()
    for i in pick:
        name, t = params[i]
        flat = t.detach().flatten()[:values].to("cpu", torch.float32)
        h.update(name.encode())
        h.update(flat.numpy().tobytes())
    return h.hexdigest()[:10]


def revision_of(path: str | Path | None) -> str:
    """The hub snapshot hash when the path is a hub cache snapshot, else `local`."""
    m = re.search(r"snapshots/([0-9a-f]{40})", str(path or ""))
    return m.group(1)[:12] if m else "local"


def fingerprint(model: nn.Module, name: str | None = None, path: str | Path | None = None) -> str:
    config = getattr(model, "config", None)
    name = name or (Path(str(path)).name if path else None) or getattr(config, "model_type", None) or type(model).__name__
    chash = config_hash(config) if config is not None else "noconfig"
    return f"{name}@{revision_of(path)}:{chash}-{weights_hash(model)}"
