"""Candidate positions and selection units of one decoding step: tokens or confidence-induced
clusters (CICs).

Shapes: `b` batch, `c` columns of the current block, `k` units (a fixed upper bound, so that no
step waits on the device to learn how many there are: `c` for tokens, `⌈c / 2⌉` for clusters).

Candidates are the masked positions of the block whose confidence is at least τ, plus the most
confident masked position, which is always a candidate (so a row with a mask always has one).
A CIC is a maximal run of candidates at consecutive canvas indices (CLAD): an already committed
position, or a masked one below τ, ends a run. A unit is described by a membership mask
`member[b, k, c]`; units with no member are padding (`valid` False). This module does not score
dependencies or choose units (`selector.py` does).
"""

from __future__ import annotations

import torch

from depmask.tensor_cache import tensor_cache


def candidate_positions(
    confidence: torch.Tensor,  # [b, c]
    mask: torch.Tensor,  # [b, c] bool: masked positions of the block
    threshold: float | torch.Tensor,
    top: torch.Tensor | None = None,  # [b, 1] `most_confident(confidence, mask)`, if at hand
) -> torch.Tensor:
    """[b, c] bool: masked positions with confidence ≥ `threshold`, plus the most confident one
    (ties to the left)."""
    top = most_confident(confidence, mask) if top is None else top  # [b, 1]
    return (mask & (confidence >= threshold)).scatter_(1, top, mask.gather(1, top))


def most_confident(confidence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[b, 1] long: the most confident masked column of each row (0 in a row with no mask)."""
    return confidence.masked_fill(~mask, float("-inf")).argmax(dim=1, keepdim=True)


def cluster_ids(candidates: torch.Tensor) -> torch.Tensor:
    """[b, c] long: the CIC index of every candidate (0, 1, … left to right), −1 elsewhere."""
    return run_number(candidates) - 1


def run_number(candidates: torch.Tensor) -> torch.Tensor:
    """[b, c] long: 1 + the CIC index of every candidate, 0 elsewhere."""
    start = candidates.clone()
    start[:, 1:] &= ~candidates[:, :-1]  # [b, c]: first position of each run
    return start.cumsum(dim=1) * candidates


def max_units(columns: int, units: str) -> int:
    """The static bound `k` on the number of units of a block of `columns` positions."""
    return columns if units == "token" else (columns + 1) // 2


def unit_members(candidates: torch.Tensor, units: str, run: torch.Tensor | None = None) -> torch.Tensor:
    """[b, k, c] bool: `member[r, u, i]` — candidate `i` of row `r` belongs to unit `u`.

    `units="token"`: unit `u` is position `u` (k = c); `units="cluster"`: unit `u` is the u-th CIC
    from the left (k = ⌈c / 2⌉: runs are separated by at least one non-candidate). `run`:
    `run_number(candidates)`, if at hand.
    """
    c = candidates.shape[1]
    if units == "token":
        return cached_eye(c, candidates.device) & candidates[:, None, :]  # [b, c, c]
    if units != "cluster":
        raise ValueError(f"`units` ({units!r}) must be 'token' or 'cluster'")
    k = max_units(c, units)
    run = run_number(candidates) if run is None else run
    return run[:, None, :] == cached_arange(1, k + 1, candidates.device)[None, :, None]  # [b, k, c]


@tensor_cache
def cached_eye(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, dtype=torch.bool, device=device)


@tensor_cache
def cached_off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


@tensor_cache
def cached_arange(start: int, end: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, end, device=device)


def unit_confidence(member: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """[b, k] float64: the highest confidence in each unit; −inf for padding units."""
    conf = confidence.to(torch.float64)[:, None, :]  # [b, 1, c]
    return conf.masked_fill(~member, float("-inf")).amax(dim=-1)
