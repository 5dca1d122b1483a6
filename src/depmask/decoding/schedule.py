"""How many tokens per step: the two published step schedules.

Neither schedule chooses *which* positions; the ordering policies do that.
"""

from __future__ import annotations

import torch


def llada_num_transfer(block_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's `get_num_transfer_tokens`: spread `block_masked[b]` over `steps` as evenly as
    possible, the remainder going to the earliest steps. Returns [b, steps] long."""
    if steps < 1:
        raise ValueError(f"`steps` ({steps}) must be >= 1")
    base = block_masked // steps  # [b]
    remainder = block_masked % steps  # [b]
    step_idx = torch.arange(steps, device=block_masked.device)  # [steps]
    return base[:, None] + (step_idx[None, :] < remainder[:, None]).long()


def llada_count(block_masked: torch.Tensor, num_masked: torch.Tensor, step: int, steps: int):
    """[b] long: tokens LLaDA commits at `step`; past the budget, everything left."""
    if step >= steps:
        return num_masked
    return llada_num_transfer(block_masked, steps)[:, step]


def dream_count(num_masked: torch.Tensor, step: int, steps: int, eps: float = 1e-3):
    """[b] long: Dream's count, `int(n_masked · (1 − s / t))` on `linspace(1, eps, steps + 1)`,
    everything left at the last step, in float32 as Dream computes it (in float64 the product
    rounds the other way near integers: 36 instead of 37 at step 21 of 27 with 223 masked). Dream
    may transfer zero tokens in a step; the caller enforces depmask's at-least-one contract."""
    if step >= steps - 1:
        return num_masked
    timesteps = torch.linspace(1, eps, steps + 1, dtype=torch.float32, device=num_masked.device)
    t, s = timesteps[step], timesteps[step + 1]
    return (num_masked.to(torch.float32) * (1 - s / t)).long()
