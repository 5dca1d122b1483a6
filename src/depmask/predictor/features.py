"""Per-slot and per-pair input features of the dependency head.

Shapes: `b` batch, `m` masked slots (padded), `d` base-model hidden size, `dim` head width.

What it does: turns one decoding state's masked slots (final hidden states, canvas positions,
optionally confidence and entropy) into slot embeddings `[b, m, dim]`, and canvas positions into
the signed, clipped relative-distance index `[b, m, m]` that the encoder and the pairwise scorer
embed. Positions enter only through differences (to the first valid slot, and between slots), so
shifting every position of a row by a constant changes nothing.

With `use_attention`, `attention_pair_features` turns the base model's captured attention among
the slots into `ATTENTION_FEATURES` numbers per ordered pair (both directions, as a share of the
row's attention to the slots, linear and log, plus each row's total attention to the slots).

What it does not do: attention between slots or pair scoring (`head.py`); it never reads a padded
slot's values (they are zeroed first, so garbage or NaN padding cannot leak into valid slots).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from depmask.tensor_cache import tensor_cache

_LOG_EPS = 1e-6
_SHARE_EPS = 1e-3  # floor of the log share: log(1e-3) ≈ −6.9, so the log features lie in [−1, 0]
ATTENTION_FEATURES = 6


def pair_mask(valid: torch.Tensor) -> torch.Tensor:
    """`[b, m, m]` bool: `valid[i] & valid[j] & (i != j)`, the pairs whose dependency is defined."""
    if valid.dim() != 2:
        raise ValueError(f"`valid` must be [b, m], got shape {tuple(valid.shape)}")
    valid = valid.bool()
    m = valid.shape[1]
    return valid[:, :, None] & valid[:, None, :] & _off_diagonal(m, valid.device)  # [b, m, m]


@tensor_cache
def _off_diagonal(m: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(m, dtype=torch.bool, device=device)  # [m, m]


def relative_index(positions: torch.Tensor, valid: torch.Tensor, max_distance: int) -> torch.Tensor:
    """`[b, m, m]` long in `[0, 2 * max_distance]`: `clip(pos[j] - pos[i], ±max_distance) + max_distance`.

    Row `i` is the slot whose prediction moves, column `j` the committed one. Pairs touching a
    padded slot get the index of distance 0 (they are masked downstream; this only keeps them
    in range).
    """
    positions = positions.masked_fill(~valid, 0)  # [b, m]
    rel = positions[:, None, :] - positions[:, :, None]  # [b, m, m]: pos[j] - pos[i]
    rel = rel.clamp(-max_distance, max_distance)
    rel = rel.masked_fill(~(valid[:, :, None] & valid[:, None, :]), 0)
    return rel + max_distance


def offset_from_first(positions: torch.Tensor, valid: torch.Tensor, max_distance: int) -> torch.Tensor:
    """`[b, m]` long in `[0, max_distance]`: each slot's canvas distance to the row's first valid
    slot, clipped; 0 on padded slots and on rows with no valid slot."""
    big = torch.iinfo(positions.dtype).max
    first = positions.masked_fill(~valid, big).amin(dim=1, keepdim=True)  # [b, 1]
    first = torch.where(valid.any(dim=1, keepdim=True), first, torch.zeros_like(first))
    offset = (positions - first).clamp(0, max_distance)  # [b, m]
    return offset.masked_fill(~valid, 0)


class SlotEncoder(nn.Module):
    """Slot embedding = Linear(LayerNorm(hidden)) + Embedding(offset from first slot)
    [+ MLP(confidence, log confidence, entropy)], then LayerNorm. Output `[b, m, dim]`."""

    def __init__(self, hidden_size: int, dim: int, max_distance: int, use_confidence: bool):
        super().__init__()
        self.max_distance = max_distance
        self.use_confidence = use_confidence
        self.norm_in = nn.LayerNorm(hidden_size)
        self.proj = nn.Linear(hidden_size, dim)
        self.offset = nn.Embedding(max_distance + 1, dim)
        nn.init.normal_(self.offset.weight, std=0.02)
        if use_confidence:
            self.scalars = nn.Sequential(nn.Linear(3, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm_out = nn.LayerNorm(dim)

    def forward(
        self,
        hidden: torch.Tensor,  # [b, m, d] in the head's dtype
        positions: torch.Tensor,  # [b, m] long
        valid: torch.Tensor,  # [b, m] bool
        confidence: torch.Tensor | None,  # [b, m] in the head's dtype, or None
        entropy: torch.Tensor | None,  # [b, m] in the head's dtype, or None
    ) -> torch.Tensor:
        keep = valid[:, :, None]  # [b, m, 1]
        hidden = self.norm_in(hidden.masked_fill(~keep, 0))
        offset = self.offset(offset_from_first(positions, valid, self.max_distance))  # [b, m, dim]
        if not self.use_confidence:
            x = self.proj(hidden) + offset
        else:
            conf = confidence.masked_fill(~valid, 1.0).clamp(0.0, 1.0)  # [b, m]
            ent = entropy.masked_fill(~valid, 0.0).clamp_min(0.0)  # [b, m]
            scalars = torch.stack([conf, conf.clamp_min(_LOG_EPS).log(), ent], dim=-1)  # [b, m, 3]
            if torch.compiler.is_compiling():
                x = self._fused(hidden, scalars) + offset
            else:
                x = self.proj(hidden) + offset + self.scalars(scalars)
        return self.norm_out(x).masked_fill(~keep, 0)  # [b, m, dim]

    def _fused(self, hidden: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """`proj(hidden) + self.scalars(scalars)` in one external (BLAS) call instead of three, for
        compiled steps (their cost is mostly per external call): the scalars' first layer (3 inputs)
        as multiply-adds that fuse with the GELU, and the projection and the scalars' last layer as
        one matmul of the two inputs side by side against their weights side by side."""
        first, act, last = self.scalars
        inner = act((scalars[..., :, None] * first.weight.T).sum(dim=-2) + first.bias)  # [b, m, dim]
        weight = torch.cat([self.proj.weight, last.weight], dim=1)  # [dim, d + dim]
        return torch.cat([hidden, inner], dim=-1) @ weight.T + (self.proj.bias + last.bias)  # [b, m, dim]


def attention_pair_features(attention: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`[b, m, m, ATTENTION_FEATURES]` features of the base model's attention among the slots.

    `attention[b, i, j]` is how much slot `i` attends to slot `j` (a row of the model's attention,
    gathered at the slots, so a row sums to at most 1). Per ordered pair (i, j), with
    `s[i, j] = A[i, j] / Σ_k A[i, k]` the share of row i's attention to the slots that goes to j:
    `s[i, j], s[j, i], log-share(i, j), log-share(j, i), Σ_k A[i, k], Σ_k A[j, k]`, the log shares
    scaled to [−1, 0]. Shares do not depend on how much the row attends to the prompt, the totals
    say it. Pairs touching a padded slot are 0; NaN or negative padding cannot leak in.
    """
    if attention.dim() != 3 or attention.shape[1] != attention.shape[2] or attention.shape[:2] != valid.shape:
        raise ValueError(f"`attention` must be [b, m, m] = {[*valid.shape, valid.shape[1]]} like the slots, "
                         f"got shape {tuple(attention.shape)}")
    pairs = valid[:, :, None] & valid[:, None, :]  # [b, m, m]
    a = torch.where(pairs, attention, torch.zeros_like(attention)).clamp_min(0.0)  # [b, m, m]
    total = a.sum(dim=-1, keepdim=True)  # [b, m, 1]
    share = a / total.clamp_min(_LOG_EPS)  # [b, m, m]
    log_share = share.clamp_min(_SHARE_EPS).log() / -math.log(_SHARE_EPS)  # [b, m, m] in [−1, 0]
    m = a.shape[1]
    feats = torch.stack([share, share.transpose(1, 2), log_share, log_share.transpose(1, 2),
                         total.expand(-1, -1, m), total.transpose(1, 2).expand(-1, m, -1)], dim=-1)
    return feats * pairs[..., None]  # [b, m, m, ATTENTION_FEATURES]
