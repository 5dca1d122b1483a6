"""Candidate tokens and their per-position statistics for one step.

Shapes: `b` batch, `c` columns of the current block, `v` vocabulary.

Sampling is Gumbel-max in float64, as LLaDA's `add_gumbel_noise` does. LLaDA writes it as
`exp(logits) / (−log u)^T`; we use the equivalent `logits + T · (−log(−log u))`, which has the
same argmax for every u and T > 0 and cannot overflow. Temperature 0 is a plain argmax. This module
does not choose which positions to commit; policies do.
"""

from __future__ import annotations

import torch

from depmask.stable_hash import stable_int


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of one batch at temperature > 0: a stable hash of (`seed`, the id of the
    batch's first item), in [0, 2^63). Batches that shared one seed would give row r of every batch
    the same noise, sampling those items together instead of independently. (The harvest and
    `eval decode` seed each batch's generator with it.)"""
    return stable_int(seed, first_id) % 2**63


def gumbel_argmax(
    logits: torch.Tensor,  # [b, c, v]
    temperature: float,
    generator: torch.Generator | None = None,
    forbid: int | None = None,
) -> torch.Tensor:
    """[b, c] long: argmax at temperature 0, otherwise a Gumbel-max sample at `temperature`.

    `forbid` (the mask id) can never be drawn: a model that proposes its own mask token would
    otherwise "commit" a mask and never finish. Statistics still use the unmodified logits.
    """
    if temperature < 0:
        raise ValueError(f"`temperature` ({temperature}) must be >= 0")
    if forbid is not None:
        logits = logits.index_fill(-1, torch.tensor([forbid], device=logits.device), float("-inf"))
    if temperature == 0:
        return logits.argmax(dim=-1)
    noise = torch.rand(
        logits.shape, dtype=torch.float64, device=logits.device, generator=generator
    )  # [b, c, v]
    gumbel = -torch.log(-torch.log(noise.clamp_min(torch.finfo(torch.float64).tiny)))
    return (logits.to(torch.float64) + temperature * gumbel).argmax(dim=-1)


def token_statistics(
    logits: torch.Tensor,  # [b, c, v]
    x0: torch.Tensor,  # [b, c]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Confidence p(x0), entropy (nats) and top-1 − top-2 margin, all float64 [b, c]."""
    logp = torch.log_softmax(logits.to(torch.float64), dim=-1)  # [b, c, v]
    p = logp.exp()
    confidence = p.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    entropy = -(p * logp.clamp_min(-1e30)).sum(dim=-1)  # 0·(−inf) → 0
    top2 = p.topk(2, dim=-1).values if p.shape[-1] > 1 else torch.cat([p, p * 0], dim=-1)
    margin = top2[..., 0] - top2[..., 1]
    return confidence, entropy, margin
