"""The sub-additivity check: is the pairwise-influence sum a bound on the parallel-commit error?

Shapes: `l` canvas, `s` positions of the committed set S (in joint order), `v` vocabulary,
`n` copies / samples / grid points, `b` rows of a decoding step.

One state: a canvas x with masked set M, and the set S ⊆ M a decoding policy commits at x.

    P(y_S) = Π_{i∈S} p_i(y_i | x)                                  parallel commit (product of marginals)
    Q(y_S) = Π_t p_{s_t}(y_{s_t} | x, y_{s_1}, …, y_{s_{t−1}})       the model's sequential joint
    TV(P, Q) = ½ Σ_y |P(y) − Q(y)|

The order s_1, s_2, … is confidence order at x (descending p_i(x̂_i), ties to the lower canvas
index): the order in which the greedy selector visits candidates. Positions of M outside S stay
masked throughout; every distribution is the model's full softmax over the vocabulary.

TV is computed three ways:
- exact: every y ∈ V^S, the tree of prefixes expanded level by level (Σ_{t<s} v^t copies);
- truncated: position s_t keeps its smallest top set T_t of p_{s_t}(·|x) with mass ≥ 1 − δ, the
  grid G = Π_t T_t is enumerated exactly (Q's conditionals stay the full softmax). Off the grid,
  ½ Σ_{G^c} |P − Q| lies in [½ |P(G^c) − Q(G^c)|, ½ (P(G^c) + Q(G^c))], with P(G^c) and Q(G^c)
  known exactly, so TV lies in [lo, hi] with hi − lo = min(P(G^c), Q(G^c)) ≤ 1 − Π_t(1 − δ);
  the estimate is the midpoint and its error bound (hi − lo) / 2;
- sampled: TV = E_{y∼P}[max(0, 1 − Q(y)/P(y))], y drawn from the product, Q(y) by s − 1 sequential
  batched forwards (identical prefixes share one copy); the error is the standard error.

The bound is DEMASK's: Σ over ordered pairs i ≠ j in S of I[i, j] = TV(p_i(·|x), p_i(·|x, x_j := v)),
with v the candidate x̂_j (k = 1) or the expectation over the top-k values of p_j (renormalised).
`bound_chain` is what the hybrid argument itself sums: only pairs where j precedes i in the joint
order, top-k expectation. This module is plain torch; it does not decode, choose sets or write files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from depmask.decoding.influence import Forward, gather_positions, pairwise_influence, top_values
from depmask.decoding.policies.base import Policy
from depmask.decoding.state import StepState

HOLD_TOLERANCE = 1e-6
"""`holds` is TV ≤ bound + this (float32 logits put TV ≈ 1e-7 on exactly independent positions)."""


@dataclass
class TVEstimate:
    tv: float  # the estimate of TV(P, Q)
    err: float  # half-width of [lo, hi] (exact / truncated) or the standard error (sampled)
    lo: float
    hi: float
    method: str  # "exact" | "truncated" | "sampled"
    support: int  # grid points enumerated, or samples drawn
    copies: int  # sequences run through the model


def confidence_order(positions: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """positions [s] sorted by descending confidence [s]; ties go to the lower canvas index."""
    by_index = positions.argsort(stable=True)
    pos, conf = positions[by_index], confidence[by_index]
    return pos[conf.argsort(descending=True, stable=True)]


def _conditionals(forward: Forward, tokens: torch.Tensor, positions: torch.Tensor, prefixes: torch.Tensor,
                  chunk_size: int) -> torch.Tensor:
    """log p_{s_t}(· | x, y_{s_1..s_t−1} = prefix) [n, v] float64, for prefixes [n, t], t ≥ 1."""
    t = prefixes.shape[1]
    out = []
    for lo in range(0, prefixes.shape[0], chunk_size):
        pre = prefixes[lo : lo + chunk_size]  # [n, t]
        copies = tokens[None].expand(pre.shape[0], -1).clone()  # [n, l]
        copies[:, positions[:t]] = pre
        states = torch.zeros(pre.shape[0], dtype=torch.long, device=tokens.device)
        logits = forward(copies, states)[:, positions[t]]  # [n, v]
        out.append(torch.log_softmax(logits.double(), dim=-1))
    return torch.cat(out)


def top_set(log_probs: torch.Tensor, delta: float) -> torch.Tensor:
    """The smallest set of values (indices, most likely first) with mass ≥ 1 − δ; δ = 0: all of V."""
    if delta <= 0:
        return torch.arange(log_probs.shape[-1], device=log_probs.device)
    p, idx = log_probs.double().exp().sort(descending=True)
    keep = int((p.cumsum(0) < 1 - delta).sum()) + 1
    return idx[: min(keep, p.numel())]


def enumeration_copies(sizes: list[int]) -> int:
    """Sequences a tree enumeration over value sets of these sizes runs: Σ_{t<s} Π_{u<t} |T_u|."""
    total, width = 0, 1
    for size in sizes[:-1]:
        width *= size
        total += width
    return total


@torch.no_grad()
def enumerated_tv(
    forward: Forward,
    tokens: torch.Tensor,  # [l]: the canvas x
    positions: torch.Tensor,  # [s]: S in joint order
    base_log_probs: torch.Tensor,  # [s, v]: log p_i(· | x) at `positions`
    delta: float = 0.0,
    max_copies: int | None = None,
    chunk_size: int = 256,
) -> TVEstimate | None:
    """TV(P, Q) over the grid of top sets (δ = 0: exact); None when it would run > `max_copies`."""
    s = positions.numel()
    if s < 1 or base_log_probs.shape[0] != s:
        raise ValueError(f"`positions` ({s}) and `base_log_probs` {tuple(base_log_probs.shape)} disagree")
    base = base_log_probs.double()
    sets = [top_set(base[t], delta) for t in range(s)]
    cost = enumeration_copies([x.numel() for x in sets])
    if max_copies is not None and cost > max_copies:
        return None
    device = tokens.device
    values = torch.zeros(1, 0, dtype=torch.long, device=device)  # [n, t]: prefixes on the grid
    log_q = torch.zeros(1, dtype=torch.float64, device=device)  # [n]
    log_p = torch.zeros(1, dtype=torch.float64, device=device)  # [n]
    for t in range(s):
        cond = base[t][None] if t == 0 else _conditionals(forward, tokens, positions, values, chunk_size)  # [n, v]
        grid = sets[t]  # [|T_t|]
        n, k = values.shape[0], grid.numel()
        values = torch.cat([values.repeat_interleave(k, 0), grid.repeat(n)[:, None]], dim=1)  # [n·k, t+1]
        log_q = (log_q[:, None] + cond[:, grid]).reshape(-1)
        log_p = (log_p[:, None] + base[t, grid][None]).reshape(-1)
    p, q = log_p.exp(), log_q.exp()
    inside = 0.5 * float((p - q).abs().sum())
    p_out, q_out = max(0.0, 1.0 - float(p.sum())), max(0.0, 1.0 - float(q.sum()))
    lo, hi = inside + 0.5 * abs(p_out - q_out), inside + 0.5 * (p_out + q_out)
    lo, hi = min(lo, 1.0), min(hi, 1.0)
    return TVEstimate(tv=0.5 * (lo + hi), err=0.5 * (hi - lo), lo=lo, hi=hi,
                      method="exact" if delta <= 0 else "truncated", support=values.shape[0], copies=cost)


@torch.no_grad()
def sampled_tv(
    forward: Forward,
    tokens: torch.Tensor,  # [l]
    positions: torch.Tensor,  # [s]: S in joint order
    base_log_probs: torch.Tensor,  # [s, v]
    samples: int = 256,
    generator: torch.Generator | None = None,
    chunk_size: int = 256,
) -> TVEstimate:
    """Monte-Carlo TV(P, Q) = E_{y∼P}[max(0, 1 − Q(y)/P(y))], with its standard error."""
    if samples < 2:
        raise ValueError(f"`samples` ({samples}) must be >= 2 for a standard error")
    s = positions.numel()
    base = base_log_probs.double()
    y = torch.multinomial(base.exp(), samples, replacement=True, generator=generator).T  # [n, s]
    y = y.to(tokens.device)
    log_p = base.gather(1, y.T).sum(0)  # [n]
    log_q = base[0, y[:, 0]].clone()  # [n]
    copies = 0
    for t in range(1, s):
        unique, inverse = torch.unique(y[:, :t], dim=0, return_inverse=True)  # [u, t], [n]
        cond = _conditionals(forward, tokens, positions, unique, chunk_size)  # [u, v]
        copies += unique.shape[0]
        log_q += cond[inverse, y[:, t]]
    w = (1.0 - (log_q - log_p).exp()).clamp_min(0.0)  # [n]
    tv, se = float(w.mean()), float(w.std(unbiased=True)) / math.sqrt(samples)
    return TVEstimate(tv=tv, err=se, lo=max(0.0, tv - 3 * se), hi=min(1.0, tv + 3 * se), method="sampled",
                      support=samples, copies=copies)


@dataclass
class Bounds:
    bound: float  # Σ_{i≠j∈S} I[i, j], values = the candidates (k = 1)
    bound_topk: float  # the same with the top-k expectation over x_j ~ p_j
    bound_chain: float  # top-k expectation, only j before i in the joint order
    tv_k1: torch.Tensor  # [s, s] the influence matrix (row i moves, column j fixed), k = 1
    copies: int


@torch.no_grad()
def influence_bounds(
    forward: Forward,
    tokens: torch.Tensor,  # [l]
    positions: torch.Tensor,  # [s]: S in joint order
    base_log_probs: torch.Tensor,  # [s, v]
    candidates: torch.Tensor,  # [s]: the values the decoder commits
    topk: int = 3,
    mask_id: int | None = None,
    chunk_size: int = 256,
) -> Bounds:
    """The pairwise-sum bounds of one set (see the module docstring)."""
    s = positions.numel()
    valid = torch.ones(1, s, dtype=torch.bool, device=tokens.device)
    args = (forward, tokens[None], positions[None], valid, base_log_probs[None].float())
    k1 = pairwise_influence(*args, candidates[None, :, None], chunk_size=chunk_size)
    values, weights = top_values(base_log_probs[None].float(), topk, forbid=mask_id)
    kk = pairwise_influence(*args, values, weights, chunk_size=chunk_size)
    tv1, tvk = k1.tv[0].double(), kk.tv[0].double()  # [s, s]
    return Bounds(bound=float(tv1.sum()), bound_topk=float(tvk.sum()), bound_chain=float(tvk.tril(-1).sum()),
                  tv_k1=tv1, copies=int(k1.copies.sum() + kk.copies.sum()))


def measure_set(
    forward: Forward,
    tokens: torch.Tensor,  # [l]
    positions: torch.Tensor,  # [s]: S in joint order
    base_log_probs: torch.Tensor,  # [s, v]
    candidates: torch.Tensor,  # [s]
    *,
    exact_max_set: int = 3,
    delta: float = 1e-3,
    max_enumeration: int = 2048,
    samples: int = 256,
    topk: int = 3,
    mask_id: int | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int = 256,
) -> dict:
    """TV(P, Q) and the bounds of one set, as a flat dict (one `states.jsonl` row).

    |S| ≤ `exact_max_set`: exact enumeration of V^S if it runs ≤ `max_enumeration` copies;
    otherwise the δ-truncated grid if that fits; otherwise `samples` Monte-Carlo draws.
    """
    est = None
    if positions.numel() <= exact_max_set:
        est = enumerated_tv(forward, tokens, positions, base_log_probs, 0.0, max_enumeration, chunk_size)
    if est is None and delta > 0:
        est = enumerated_tv(forward, tokens, positions, base_log_probs, delta, max_enumeration, chunk_size)
    if est is None:
        est = sampled_tv(forward, tokens, positions, base_log_probs, samples, generator, chunk_size)
    b = influence_bounds(forward, tokens, positions, base_log_probs, candidates, topk, mask_id, chunk_size)
    return {
        "set_size": positions.numel(), "tv": est.tv, "tv_err": est.err, "tv_lo": est.lo, "tv_hi": est.hi,
        "method": est.method, "support": est.support, "copies": est.copies + b.copies,
        "bound": b.bound, "bound_topk": b.bound_topk, "bound_chain": b.bound_chain,
        "holds": est.tv <= b.bound + HOLD_TOLERANCE, "holds_topk": est.tv <= b.bound_topk + HOLD_TOLERANCE,
        "holds_chain": est.tv <= b.bound_chain + HOLD_TOLERANCE,
        "ratio": est.tv / b.bound if b.bound > HOLD_TOLERANCE else None,
    }


class SetProbe(Policy):
    """Delegate to `policy`; at every state where it commits ≥ `min_set` positions, measure the set.

    Reads the loop's `block_log_probs` for the marginals and runs Q's conditionals and the
    influences through the loop's counted `probe`. Never changes what `policy` commits. Records
    land in `self.records` with `row` (batch row) and `step` (forward index of that row).
    """

    name = "subadditivity"
    needs_probe = True

    def __init__(self, policy: Policy, mask_id: int, min_set: int = 2, generator: torch.Generator | None = None,
                 **settings):
        if min_set < 2:
            raise ValueError(f"`min_set` ({min_set}) must be >= 2: a single commit has TV 0")
        self.policy, self.mask_id, self.min_set = policy, mask_id, min_set
        self.generator, self.settings = generator, settings
        self.needs_hidden = policy.needs_hidden
        self.needs_attention = policy.needs_attention
        self.records: list[dict] = []
        self.sizes: list[int] = []  # |S| of every state seen, measured or not
        self._counter: dict[int, int] = {}

    def bind(self, denoiser) -> None:
        if hasattr(self.policy, "bind"):
            self.policy.bind(denoiser)

    def select(self, state: StepState) -> torch.Tensor:
        commit = self.policy.select(state)  # [b, l]
        for local, row in enumerate(state.rows.tolist()):
            step = self._counter.get(row, 0)
            self._counter[row] = step + 1
            chosen = commit[local].nonzero().squeeze(1)  # [s]
            self.sizes.append(chosen.numel())
            if chosen.numel() < self.min_set:
                continue
            positions = confidence_order(chosen, state.confidence[local, chosen])
            cols = (positions - state.block_start)[None]  # [1, s]
            base = gather_positions(state.block_log_probs[local : local + 1], cols)[0]  # [s, v]
            index = torch.tensor(local, device=state.tokens.device)

            def forward(copies: torch.Tensor, states: torch.Tensor, index=index) -> torch.Tensor:
                return state.probe(copies, index.expand(states.shape[0]))

            rec = measure_set(forward, state.tokens[local], positions, base, state.x0[local, positions],
                              mask_id=self.mask_id, generator=self.generator, **self.settings)
            rec.update(row=row, step=step, masked=int(state.mask[local].sum()), block=state.block,
                       positions=positions.tolist(), confidence=state.confidence[local, positions].tolist())
            self.records.append(rec)
        return commit
