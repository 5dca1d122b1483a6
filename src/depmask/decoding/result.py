"""`DecodeResult` and the per-row decoding metrics computed from its commit record.

Shapes: `b` batch, `l` canvas, `g` gen_length.

Metrics (per row, from `commit_step`, the 1-based forward at which each generated position was
committed, 0 for positions filled after an early stop):
- NFE: forwards the row took part in. Extra forwards a probing scorer (the oracle) makes count
  too, one per perturbed copy of the row, and are also reported alone as `probe_nfe`.
- TPF, tokens per forward: committed positions / NFE.
- AFP, average finalisation parallelism: committed positions / number of distinct steps that
  committed at least one (the parallelism study's measure; equal to TPF when every forward
  commits, larger when some forwards commit nothing, e.g. scorer forwards).
- Kendall's τ-b between commit order and left-to-right order over committed positions: 1 is
  autoregressive order, −1 right-to-left, ties (positions committed in the same step) handled
  by τ-b. NaN when fewer than two distinct steps.
This module does not decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class DecodeResult:
    tokens: torch.Tensor  # [b, l] final canvas: left padding, prompt, answer
    prompt_width: int  # canvas index where the answer starts
    commit_step: torch.Tensor  # [b, g] long, 1-based forward of commit; 0 = filled, not committed
    nfe: torch.Tensor  # [b] long forwards per row
    forwards: int  # batched forward calls (the wall-clock cost of the batch)
    seconds: float  # wall time of the whole decode
    attention_mask: torch.Tensor | None = None  # [b, l] bool, None when no row is padded
    probe_nfe: torch.Tensor | None = None  # [b] long: the part of `nfe` spent on probe copies

    def __repr__(self) -> str:
        b, g = self.commit_step.shape
        return f"DecodeResult(batch={b}, gen_length={g}, forwards={self.forwards}, seconds={self.seconds:.3f})"

    @property
    def generated(self) -> torch.Tensor:
        """[b, g] long: the answer tokens."""
        return self.tokens[:, self.prompt_width :]

    @property
    def committed(self) -> torch.Tensor:
        """[b] long: answer positions committed by the policy (not filled after a stop)."""
        return (self.commit_step > 0).sum(dim=1)

    def tpf(self) -> torch.Tensor:
        """[b] float: tokens per forward."""
        return self.committed.double() / self.nfe.clamp_min(1).double()

    def afp(self) -> torch.Tensor:
        """[b] float: committed tokens per step that committed at least one."""
        out = []
        for row in self.commit_step:
            steps = row[row > 0].unique().numel()
            out.append(float((row > 0).sum()) / steps if steps else float("nan"))
        return torch.tensor(out, dtype=torch.float64)

    def kendall_tau(self) -> torch.Tensor:
        """[b] float: Kendall's τ-b between commit step and position (NaN if undefined)."""
        return torch.tensor([_tau_b(row[row > 0]) for row in self.commit_step], dtype=torch.float64)

    def summary(self) -> dict:
        """For tables and JSON: means over the batch's rows, except `forwards` and `seconds`, which
        are the batch's totals."""
        return {
            "nfe": float(self.nfe.double().mean()),
            "tpf": float(self.tpf().mean()),
            "afp": float(_nanmean(self.afp())),
            "kendall_tau": float(_nanmean(self.kendall_tau())),
            "probe_nfe": float(self.probe_nfe.double().mean()) if self.probe_nfe is not None else 0.0,
            "forwards": self.forwards,
            "seconds": self.seconds,
        }


def _nanmean(x: torch.Tensor) -> float:
    ok = ~torch.isnan(x)
    return float(x[ok].mean()) if bool(ok.any()) else math.nan


def _tau_b(order: torch.Tensor) -> float:
    """τ-b between `order` (commit steps, in position order) and the positions 0..n-1."""
    n = order.numel()
    if n < 2:
        return math.nan
    o = order.double()
    diff = torch.sign(o[None, :] - o[:, None])  # [n, n]; position difference is always +1 above diag
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    s = float(diff[upper].sum())  # concordant − discordant
    n0 = n * (n - 1) / 2
    ties = float((diff[upper] == 0).sum())
    denom = math.sqrt(n0 * (n0 - ties))
    return s / denom if denom > 0 else math.nan
