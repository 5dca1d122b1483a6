"""The head's precision@k, per state, as a tensor the Lightning module sums over ranks (the
evaluation's `eval.predictor_quality.precision_at_k` counts ties the same way)."""

from __future__ import annotations

import torch


def precision_shares(logits: torch.Tensor, tv: torch.Tensor, pairs: torch.Tensor, k: int,
                     positive_threshold: float) -> torch.Tensor:
    """Per state with ≥ `k` pairs (`[b, m, m]` inputs, one state per row), the share of its top-k
    pairs by predicted score that are positive (TV ≥ threshold); ties at the k-th place count by
    their expected share, as `eval.predictor_quality.precision_at_k` counts them. `[e]`."""
    enough = pairs.flatten(1).sum(dim=1) >= k  # [b]
    if not enough.any():
        return torch.zeros(0, device=logits.device)
    scores = torch.sigmoid(logits.float()).masked_fill(~pairs, float("-inf")).flatten(1)[enough]  # [e, m*m]
    positive = ((tv.float() >= positive_threshold) & pairs).flatten(1)[enough]  # [e, m*m]
    kth = scores.topk(k, dim=1).values[:, -1:]  # [e, 1]: the k-th largest score
    above, tied = scores > kth, scores == kth
    from_ties = (k - above.sum(1)) * (positive & tied).sum(1) / tied.sum(1)
    return ((positive & above).sum(1) + from_ties) / k
