"""Random head inputs shared by the predictor tests."""

from __future__ import annotations

import torch

D = 32  # tiny hidden size for fast tests


def _state(b: int = 2, m: int = 6, d: int = D, seed: int = 0, start: int = 10):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, m, d, generator=g)  # [b, m, d]
    positions = start + torch.randperm(3 * m, generator=g)[:m].sort().values.repeat(b, 1)  # [b, m]
    valid = torch.ones(b, m, dtype=torch.bool)
    confidence = torch.rand(b, m, generator=g)
    entropy = 3 * torch.rand(b, m, generator=g)
    return hidden, positions, valid, confidence, entropy
