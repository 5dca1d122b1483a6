"""Empirical pairwise conditional influence, computed with batched perturbed forwards.

Shapes: `b` states, `l` canvas, `m` masked positions of a state (padded to the widest state),
`k` values tried per perturbed position, `v` vocabulary, `n` perturbed copies in one forward.

For a state with masked set M, predictions p_i(·| x) and candidate values x̂:

    tv[i, j] = Σ_k w_jk · TV( p_i(· | x),  p_i(· | x, x_j := value_jk) )        i ≠ j in M
    kl[i, j] = Σ_k w_jk · KL( p_i(· | x, x_j := value_jk)  ‖  p_i(· | x) )

Row i is the position whose prediction moves, column j the position that is fixed. With k = 1 and
value = the candidate the decoder would commit (argmax at temperature 0) this is DEMASK's
influence at the committed value; with the top-k values of p_j and renormalised weights it is the
expectation over x_j ~ p_j restricted to its top k (k times the cost). The KL direction is chosen
so that its expectation over x_j ~ p_j is the mutual information between x_i and x_j under the
model's conditional. The diagonal and every entry touching a padded slot are 0.

One perturbed copy of the canvas per (state, j, value); the copies go through the model in chunks
of at most `chunk_size` rows, so a whole row set costs ⌈(m · k) / chunk_size⌉ forwards. This module
is plain torch: the oracle scorer (decoding) and the harvest (data_gen) both call it. It does not
choose states or positions; callers do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`forward(copies [n, l], states [n]) -> logits [n, l, v]`: one call = one forward; `states` says
which state each copy was made from (for its attention mask, and for NFE accounting). A loop's
`StepState.probe` has exactly this signature."""


def denoiser_forward(denoiser, attention_mask: torch.Tensor | None = None) -> Forward:
    """A `Forward` over a plain denoiser: copy n takes row `states[n]` of `attention_mask`."""

    def forward(copies: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return denoiser(copies, None if attention_mask is None else attention_mask[states]).logits

    return forward


@dataclass
class Influence:
    tv: torch.Tensor  # [b, m, m] float32 in [0, 1]
    kl: torch.Tensor  # [b, m, m] float32 >= 0
    forwards: int  # batched forwards spent
    copies: torch.Tensor  # [b] long: perturbed sequences run per state (its NFE cost)


def gather_positions(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [b, l, ...] gathered at positions [b, m] → [b, m, ...]."""
    index = positions.reshape(*positions.shape, *([1] * (x.dim() - 2)))
    return x.gather(1, index.expand(*positions.shape, *x.shape[2:]))


def top_values(
    log_probs: torch.Tensor,  # [b, m, v]
    k: int,
    forbid: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely values of each position and their renormalised weights ([b, m, k] each).

    `forbid` (the mask id) is never proposed as a value.
    """
    if k < 1:
        raise ValueError(f"`k` ({k}) must be >= 1")
    if forbid is not None:
        log_probs = log_probs.index_fill(-1, torch.tensor([forbid], device=log_probs.device), float("-inf"))
    top = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)
    weights = torch.softmax(top.values.float(), dim=-1)
    return top.indices, weights


def check_topk(topk: int, vocab_size: int) -> None:
    """Refuse a `topk` above the values a position can take (the vocabulary less the mask id):
    `top_values` would take them all and a record would name the `topk` asked for."""
    if topk > vocab_size - 1:
        raise ValueError(f"`topk` ({topk}) must be at most {vocab_size - 1}: the model's vocabulary "
                         f"({vocab_size}) less its mask id")


def chunk_for_budget(budget_bytes: int, length: int, vocab: int, bytes_per_logit: int = 4, *,
                     positions: int = 0) -> int:
    """Perturbed copies per forward so that one chunk's logits and statistics fit in `budget_bytes`.

    The logits dominate activation memory at inference for real vocabularies (LLaDA: 126k);
    a caller with a tighter bound on the model's own activations passes a smaller budget. A copy
    costs 3 × 4 bytes per logit of its canvas here: the model's own logits (bf16 or float32), the
    denoiser's float32 copy, and Dream's un-shifted copy. Measured on the real vocabularies with
    a bf16 model (a 256-token canvas, 32 positions): 5.2 bytes per logit for LLaDA, 8.2 for Dream.
    `pairwise_influence` then holds up to four float32 `[n, m, v]` statistics of the `positions`
    (m) positions it compares at once, 16 bytes per position and value: with m ≪ l they are small,
    but a block as long as the canvas (the oracle's first step with one block) more than doubles a
    copy's cost, and the budget left them out.
    """
    if budget_bytes <= 0:
        raise ValueError(f"`budget_bytes` ({budget_bytes}) must be > 0")
    if positions < 0:
        raise ValueError(f"`positions` ({positions}) must be >= 0")
    per_copy = length * vocab * bytes_per_logit * 3 + positions * vocab * 16
    return max(1, budget_bytes // per_copy)


@torch.no_grad()
def pairwise_influence(
    forward: Forward,
    tokens: torch.Tensor,  # [b, l] long: the canvas of each state
    positions: torch.Tensor,  # [b, m] long: the masked positions (padded slots: any index)
    valid: torch.Tensor,  # [b, m] bool: False on padded slots
    base_log_probs: torch.Tensor,  # [b, m, v]: log p_i(· | x) at `positions`
    values: torch.Tensor,  # [b, m, k] long: the value(s) each position is fixed to
    weights: torch.Tensor | None = None,  # [b, m, k]: sums to 1 over k (default uniform)
    chunk_size: int = 64,
) -> Influence:
    """TV and KL influence matrices of every state (see the module docstring)."""
    b, m = positions.shape
    if values.dim() == 2:
        values = values.unsqueeze(-1)
    k = values.shape[-1]
    if weights is None:
        weights = torch.full(values.shape, 1.0 / k, dtype=torch.float32, device=values.device)
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` ({chunk_size}) must be >= 1")
    if tokens.shape[0] != b or base_log_probs.shape[:2] != (b, m) or values.shape[:2] != (b, m):
        raise ValueError(
            f"shapes disagree: tokens {tuple(tokens.shape)}, positions {tuple(positions.shape)}, "
            f"base_log_probs {tuple(base_log_probs.shape)}, values {tuple(values.shape)}"
        )
    device = tokens.device
    base_lp = base_log_probs.float()  # [b, m, v]
    base_p = base_lp.exp()
    # One copy per valid (state, j, value): its indices.
    state_idx, j_idx, k_idx = (valid[:, :, None].expand(b, m, k)).nonzero(as_tuple=True)  # [n_all]
    # float32 whatever torch's default dtype (Lightning's `bf16-true` / `16-true` set it to half)
    tv = torch.zeros(b, m, m, dtype=torch.float32, device=device)
    kl = torch.zeros(b, m, m, dtype=torch.float32, device=device)
    rows = torch.arange(m, device=device)[None, :]  # [1, m]
    forwards = 0
    for lo in range(0, state_idx.numel(), chunk_size):
        s, j, kk = state_idx[lo : lo + chunk_size], j_idx[lo : lo + chunk_size], k_idx[lo : lo + chunk_size]
        copies = tokens[s].clone()  # [n, l]
        copies[torch.arange(s.numel(), device=device), positions[s, j]] = values[s, j, kk]
        logits = forward(copies, s)  # [n, l, v]
        forwards += 1
        lp = torch.log_softmax(gather_positions(logits, positions[s]).float(), dim=-1)  # [n, m, v]
        p = lp.exp()
        tv_rows = 0.5 * (p - base_p[s]).abs().sum(-1)  # [n, m]
        kl_rows = (p * (lp - base_lp[s])).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1).clamp_min(0)
        w = weights[s, j, kk][:, None].float()  # [n, 1]
        # Column j of state s receives, for every row i, the weighted change at i.
        idx = (s[:, None].expand(-1, m), rows.expand(s.numel(), -1), j[:, None].expand(-1, m))
        tv.index_put_(idx, w * tv_rows, accumulate=True)
        kl.index_put_(idx, w * kl_rows, accumulate=True)
        del logits, lp, p  # not alive through the next chunk's forward: [n, l, v] each time
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(m, dtype=torch.bool, device=device)
    tv = tv.masked_fill(~pair, 0.0).clamp(0.0, 1.0)
    kl = kl.masked_fill(~pair, 0.0)
    copies_per_state = valid.sum(1) * k
    return Influence(tv=tv, kl=kl, forwards=forwards, copies=copies_per_state)
