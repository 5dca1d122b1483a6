"""The dependency head's pairwise scorers: one logit per ordered pair of slots `(i, j)` from the
slot embeddings `u [b, m, dim]` and the clipped relative-distance index `rel [b, m, m]`
(`features.relative_index`), optionally plus the attention features of the pair
(`features.attention_pair_features`, `[b, m, m, ATTENTION_FEATURES]`).

Shapes: `b` batch, `m` slots, `dim` head width, `pair_dim` width of the pair MLP.

`PairScorer` (the default): a bilinear term plus a small MLP over pair features, its first layer
applied factorised (per slot, then broadcast), so no `[b, m, m, dim]` tensor is built.
`BilinearScorer` (the lean one): a bilinear term plus a learned bias per distance. Neither masks
padding; `DependencyHead` does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from depmask.predictor.features import ATTENTION_FEATURES

INIT_LOGIT = -2.0  # most influences are small: start near sigmoid(-2) ≈ 0.12


class BilinearScorer(nn.Module):
    """One logit per ordered pair (i, j): `q_i·k_j / sqrt(dim) + b(pos_j − pos_i)`, a bilinear
    term plus a learned bias per clipped signed distance — the lean scorer (`pair_mlp=False`);
    with `attention`, plus a linear function of the pair's attention features."""

    def __init__(self, dim: int, num_rel: int, attention: bool = False):
        super().__init__()
        self.dim = dim
        self.qk = nn.Linear(dim, 2 * dim, bias=False)
        self.rel_logit = nn.Embedding(num_rel, 1)
        nn.init.constant_(self.rel_logit.weight, INIT_LOGIT)
        self.att = nn.Linear(ATTENTION_FEATURES, 1, bias=False) if attention else None

    def forward(self, u: torch.Tensor, rel: torch.Tensor, att: torch.Tensor | None = None) -> torch.Tensor:
        q, k = self.qk(u).split(self.dim, dim=-1)  # [b, m, dim] each
        bias = self.rel_logit.weight[:, 0][rel]  # [b, m, m]
        if self.att is not None:
            bias = bias + self.att(att).squeeze(-1)  # + w · attention features
        return torch.baddbmm(bias, q, k.transpose(-1, -2), alpha=1.0 / math.sqrt(self.dim))  # [b, m, m]


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class PairScorer(nn.Module):
    """One logit per ordered pair (i, j): bilinear term + small MLP over pair features
    `[u_i, u_j, u_i ⊙ u_j, E(pos_j − pos_i)]` (`product=False` drops `u_i ⊙ u_j`, the one
    `[b, m, m, pair_dim]` term that costs `dim` multiply-adds per entry; `attention` adds the
    pair's attention features)."""

    def __init__(self, dim: int, pair_dim: int, num_rel: int, dropout: float, product: bool = True,
                 activation: str = "gelu", attention: bool = False):
        super().__init__()
        self.dim = dim
        self.product = product
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        # first MLP layer on [u_i, u_j, u_i ⊙ u_j, E(rel)], split by block
        self.row = nn.Linear(dim, pair_dim)
        self.col = nn.Linear(dim, pair_dim, bias=False)
        if product:
            self.prod = nn.Parameter(torch.empty(pair_dim, dim))
            nn.init.normal_(self.prod, std=1.0 / dim)
        self.rel = nn.Embedding(num_rel, pair_dim)
        nn.init.normal_(self.rel.weight, std=0.02)
        self.att = nn.Linear(ATTENTION_FEATURES, pair_dim, bias=False) if attention else None
        act = ACTIVATIONS[activation]
        self.mlp = nn.Sequential(
            act(), nn.Dropout(dropout), nn.Linear(pair_dim, pair_dim), act(), nn.Linear(pair_dim, 1)
        )
        nn.init.constant_(self.mlp[-1].bias, INIT_LOGIT)

    def forward(self, u: torch.Tensor, rel: torch.Tensor, att: torch.Tensor | None = None) -> torch.Tensor:
        if torch.compiler.is_compiling():  # the same arithmetic in fewer external (BLAS) calls
            q, k, row, col = self._projections(u)
            # a fused multiply-sum, not a batched matmul (eager keeps the matmul: this form would
            # build a `[b, m, m, dim]` tensor there)
            bilinear = (q[:, :, None, :] * k[:, None, :, :]).sum(dim=-1) / math.sqrt(self.dim)  # [b, m, m]
        else:
            q, k, row, col = self.query(u), self.key(u), self.row(u), self.col(u)
            bilinear = q @ k.transpose(-1, -2) / math.sqrt(self.dim)  # [b, m, m]
        first = row[:, :, None, :] + col[:, None, :, :] + self.rel(rel)  # [b, m, m, pair_dim]
        if self.att is not None:
            first = first + self.att(att)  # + W_a · attention features of (i, j)
        if self.product:
            scaled = u[:, :, None, :] * self.prod  # [b, m, pair_dim, dim]: u_i ⊙ W_p, per output unit
            first = first + torch.einsum("bipc,bjc->bijp", scaled, u)  # + W_p (u_i ⊙ u_j)
        # the last layer (pair_dim → 1) as a fused multiply-sum: as a matmul with one output column
        # it is an external GEMM call per step, which costs more than its arithmetic
        *layers, last = self.mlp
        for layer in layers:
            first = layer(first)
        return bilinear + (first * last.weight[0]).sum(dim=-1) + last.bias[0]  # [b, m, m]

    def _projections(self, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`query(u), key(u), row(u), col(u)` as one matmul with the four weights stacked: under
        compilation a step's cost is mostly per external call (on the embedded model on CPU, each
        GEMM right after a forward costs more than its arithmetic), so one call instead of four."""
        p = self.row.out_features
        weight = torch.cat([self.query.weight, self.key.weight, self.row.weight, self.col.weight])  # [2 dim + 2 p, dim]
        q, k, row, col = (u @ weight.T).split([self.dim, self.dim, p, p], dim=-1)
        return q, k, row + self.row.bias, col
