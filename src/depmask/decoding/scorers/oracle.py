"""The `oracle` scorer: the exact empirical pairwise influence at this step, measured with extra
forwards (the upper bound of any learned predictor).

For the candidate positions j of the block it runs one perturbed copy of the canvas with
`x_j := x̂_j` (the value the decoder would commit) and reads the TV change of every candidate's
prediction, `D[i, j] = TV(p_i(· | x), p_i(· | x, x_j := x̂_j))`, through
`depmask.decoding.influence.pairwise_influence`. The copies go through `state.probe`, which the
loop gives policies with `needs_probe` and counts per row in NFE and in `probe_nfe`; they are
batched `chunk_size` copies per forward, fewer when their logits would pass `memory_budget_mb`. Only candidates are probed (the selector never commits
anything else), so a step costs as many copies as it has candidates — none when a row has only
one (there is no pair to measure, and that one is committed whatever the scores).
"""

from __future__ import annotations

import numbers

import torch

from depmask.decoding.influence import chunk_for_budget, pairwise_influence
from depmask.decoding.scorers.base import Scorer, block_slots, scatter_block
from depmask.decoding.state import StepState


class OracleScorer(Scorer):
    name = "oracle"
    needs_probe = True

    def __init__(self, chunk_size: int = 64, memory_budget_mb: int = 8192):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
            raise ValueError(f"`chunk_size` ({chunk_size!r}) must be an int >= 1")
        if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, int) or memory_budget_mb < 1:
            raise ValueError(f"`memory_budget_mb` ({memory_budget_mb!r}) must be an int >= 1")
        self.chunk_size, self.memory_budget_mb = int(chunk_size), memory_budget_mb

    def chunk(self, length: int, vocab: int, positions: int = 0) -> int:
        """Copies per probe forward: `chunk_size`, fewer when their logits and the statistics of the
        `positions` probed positions would pass the budget (64 copies of a 1,536-token LLaDA canvas
        hold ~100 GB of logits)."""
        return min(self.chunk_size, chunk_for_budget(self.memory_budget_mb * 2**20, length, vocab,
                                                     positions=positions))

    def score(self, state: StepState, candidates: torch.Tensor | None = None) -> torch.Tensor:
        if state.probe is None or state.block_log_probs is None:
            raise ValueError("the oracle scorer needs `state.probe` and `state.block_log_probs`; "
                             "`generate()` provides them for policies whose `needs_probe` is True")
        order, positions, valid = block_slots(state, candidates)
        valid = valid & (valid.sum(dim=1, keepdim=True) > 1)  # [b, m]: a lone candidate has no pair to probe
        s = state.block_start
        v = state.block_log_probs.shape[-1]
        base = state.block_log_probs.gather(1, (positions - s)[:, :, None].expand(-1, -1, v))  # [b, m, v]
        values = state.x0.gather(1, positions)[:, :, None]  # [b, m, 1]
        influence = pairwise_influence(
            state.probe, state.tokens, positions, valid, base, values,
            chunk_size=self.chunk(state.tokens.shape[1], v, positions.shape[1]),
        )  # the probe has pairwise_influence's `forward(copies, states)` signature
        return scatter_block(influence.tv, order, state)  # [b, l, l]

    def __repr__(self) -> str:
        return f"OracleScorer(chunk_size={self.chunk_size}, memory_budget_mb={self.memory_budget_mb})"
