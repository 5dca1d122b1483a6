"""The shared greedy selector of every dependency-aware policy (CLAD, DEMASK, the oracle and their
crossings): one function, `greedy_select`, from a dependency matrix to a commit mask.

Shapes: `b` batch, `c` columns of the current block, `k` units (tokens or CICs, `clusters.py`).

Units are visited greedily; a unit joins the chosen set while the rule holds, and the first unit
visited always joins (so every row with a mask commits something). Two rules:

- `budget` (DEMASK). Units are visited in confidence order (a unit's confidence is its highest).
  The summed pairwise dependency of the chosen positions, over ordered pairs in both directions,
  `Σ_{i ≠ j ∈ S} D[i, j]`, must stay ≤ ε. With `skip_blocked=False` the visit stops at the first
  unit that would break the budget, so the chosen set is a confidence-ordered prefix — monotone in
  ε, and computed in closed form, without sorting (`_budget_prefix`). With `skip_blocked=True` such a unit is
  skipped and later ones may still join (a larger set, no longer monotone in ε).
- `conflict` (CLAD). Dependencies are symmetrised, `S = max(D, Dᵀ)` with a zero diagonal (the
  diagonal never enters an affinity between distinct units, so it is not actually cleared); the
  affinity of units a, b is the maximum over rows i ∈ a of the mean over columns j ∈ b of S[i, j],
  symmetrised by max. A conflict edge joins a and b when each is the other's top-1 and the
  affinity is at least both row means (mean over the other units), as issue 6 states the rule.
  That test never rejects a mutual top-1 pair (a row's maximum is at least its mean), so with
  3 or more units the pair of largest affinity, which is always mutual, is an edge whatever its
  strength; only with ≤ 2 units must the affinity reach `edge_floor` (CLAD: 1.2 / L, 1.2 times
  the uniform attention over the L attended keys). Applying that floor at every unit count
  changed nothing measurable on the embedded model (README, "Scores or rule?"). A zero affinity is never an edge (it only arises
  with an all-zero scorer, where index ties would otherwise decide mutual top-1). Mutual top-1
  edges form a matching, on which the maximum-weight independent set (weight = unit size) keeps
  the larger unit of every edge — ties to the more confident one — in closed form; so here the
  first unit visited is the largest, not the most confident. With `edge_threshold` set, every
  pair whose affinity reaches it is an edge instead (any graph); units are then visited heaviest
  first (size, then confidence) and join when no edge reaches a chosen unit: the greedy
  approximation of the maximum-weight independent set, exact on a matching.

Vectorised over the batch; only the general-graph conflict rule and `skip_blocked` loop, over
the ≤ k units, with batched tensor operations. It does not compute dependencies (`scorers/`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from depmask.decoding.clusters import (
    cached_arange,
    cached_off_diagonal,
    candidate_positions,
    run_number,
    unit_confidence,
    unit_members,
)

RULES = ("budget", "conflict")
UNITS = ("token", "cluster")
UNIFORM_MULTIPLE = 1.2  # CLAD's edge floor with ≤ 2 units, in units of uniform attention 1 / L


def greedy_select(
    dependency: torch.Tensor,  # [b, c, c] D[i, j]: how much committing j moves i (block columns)
    confidence: torch.Tensor,  # [b, c]
    mask: torch.Tensor,  # [b, c] bool: masked positions of the block
    *,
    units: str = "token",
    rule: str = "budget",
    threshold: float | torch.Tensor = 0.0,  # a 0-d tensor under a compiled step (`Policy.tensor_knobs`)
    epsilon: float | torch.Tensor = 0.1,
    skip_blocked: bool = False,
    edge_threshold: float | None = None,
    edge_floor: torch.Tensor | float | None = None,  # [b] or scalar; required by `conflict`
    candidates: torch.Tensor | None = None,  # [b, c] bool, when the caller has them already
) -> torch.Tensor:
    """[b, c] bool: the positions to commit (see the module docstring for the rules).

    Candidates are the masked positions with confidence ≥ `threshold` plus the most confident
    one (`clusters.candidate_positions`); nothing else is ever committed.
    """
    if rule not in RULES:
        raise ValueError(f"`rule` ({rule!r}) must be one of {RULES}")
    if rule == "conflict" and edge_floor is None and edge_threshold is None:
        raise ValueError("the conflict rule needs `edge_floor` (CLAD: 1.2 / L) or `edge_threshold`")
    if candidates is None:
        candidates = candidate_positions(confidence, mask, threshold)  # [b, c]
    dep = dependency.to(torch.float64)
    if units == "token":  # unit u is column u: no membership matrices
        conf = confidence.to(torch.float64).masked_fill(~candidates, float("-inf"))  # [b, c]
        if rule == "budget":  # the diagonal (a position on itself) is never counted
            return _budget(dep, conf, candidates, epsilon, skip_blocked, inner_on_diagonal=False)
        return _conflict(dep, conf, candidates, None, None, edge_threshold, edge_floor)
    run = run_number(candidates)  # [b, c]: 1 + the cluster of each candidate, 0 elsewhere
    member = unit_members(candidates, units, run)  # [b, k, c]
    valid = member.any(dim=-1)  # [b, k]
    conf = unit_confidence(member, confidence)  # [b, k]
    m = member.to(dep.dtype)  # [b, k, c]
    if rule == "budget":
        dep = dep.clone() if dep is dependency else dep
        dep.diagonal(dim1=1, dim2=2).zero_()  # a position never depends on itself
        unit_dep = m @ dep @ m.transpose(1, 2)  # [b, k, k] Σ over members; diagonal: inner pairs
        chosen = _budget(unit_dep, conf, valid, epsilon, skip_blocked, inner_on_diagonal=True)
    else:
        chosen = _conflict(dep, conf, valid, member, m, edge_threshold, edge_floor)
    return F.pad(chosen, (1, 0)).gather(1, run)  # [b, c]: a candidate's unit is chosen


def _conflict(dep, conf, valid, member, m, edge_threshold, edge_floor) -> torch.Tensor:
    """[b, k] bool: the conflict rule over units (`member`/`m` None: token units, k = c)."""
    # [b, c, c]; its diagonal is never read: affinities of a unit with itself are masked out
    sym = torch.maximum(dep, dep.transpose(1, 2))
    affinity = sym if member is None else cluster_affinity(sym, member, m)  # [b, k, k]
    size = valid.to(conf.dtype) if m is None else m.sum(dim=-1)  # [b, k]
    if edge_threshold is None:
        partner, has_edge = mutual_edges(affinity, valid, edge_floor)
        return resolve_matching(partner, has_edge, _key(conf, size), valid)
    edges = (affinity >= edge_threshold) & _pairs(valid)
    return resolve_conflicts(edges, _order(conf, size), valid)


def _pairs(valid: torch.Tensor) -> torch.Tensor:
    """[b, k, k] bool: ordered pairs of distinct real units."""
    return valid[:, :, None] & valid[:, None, :] & cached_off_diagonal(valid.shape[1], valid.device)


def _key(conf: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
    """[b, k] the visiting key: confidence, or size first (then confidence); −inf on padding."""
    return conf if size is None else size + conf / 2  # conf in [0, 1]: never outweighs one position


def _order(conf: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
    """[b, k] long: units by confidence (highest first; ties to the left), or by size first
    (then confidence). Padding units (confidence −inf) come last."""
    return _key(conf, size).argsort(dim=1, descending=True, stable=True)


def _budget(unit_dep, conf, valid, epsilon: float | torch.Tensor, skip_blocked: bool,
            inner_on_diagonal: bool) -> torch.Tensor:
    """[b, k] bool: the budget rule over units (unit_dep [b, k, k]: summed dependency; its
    diagonal counts a unit's inner pairs when `inner_on_diagonal`, else it is ignored)."""
    if not skip_blocked:  # a prefix, in closed form
        return _budget_prefix(unit_dep, conf, valid, epsilon, inner_on_diagonal)
    b, k = valid.shape
    order = _order(conf)  # [b, k]
    valid_sorted = valid.gather(1, order)  # [b, k]
    if not inner_on_diagonal:
        unit_dep = unit_dep.clone()
        unit_dep.diagonal(dim1=1, dim2=2).zero_()
    chosen = torch.zeros_like(valid)
    cost = torch.zeros(b, dtype=unit_dep.dtype, device=unit_dep.device)
    rows = torch.arange(b, device=valid.device)
    for t in range(k):
        u = order[:, t]  # [b]
        both = unit_dep[rows, u, :] + unit_dep[rows, :, u]  # [b, k]: to and from u
        delta = (both * chosen).sum(dim=1) + unit_dep[rows, u, u]  # [b]
        join = valid_sorted[:, t] & ((cost + delta <= epsilon) | (t == 0))
        cost = torch.where(join, cost + delta, cost)
        chosen[rows, u] |= join
    return chosen


def _budget_prefix(unit_dep, conf, valid, epsilon: float | torch.Tensor,
                   inner_on_diagonal: bool) -> torch.Tensor:
    """[b, k] bool: the budget rule's confidence-ordered prefix, without sorting — a few fused
    `[b, k, k]` reductions instead of a sort, gathers, two cumulative sums and a scatter (on a small
    model a sort and its memory traffic cost more than the arithmetic).

    `before[i, j]`: unit j is visited strictly before i (higher confidence, ties to the left). Every
    pair of a prefix is counted at its later unit: `add[j] = Σ_l before[j, l] (D[j, l] + D[l, j])`
    (+ `D[j, j]`, its inner pairs, when `inner_on_diagonal`), so the prefix that ends at i costs
    `add[i] + Σ_j before[i, j] add[j]`. Unit i joins when every unit up to it is within ε (the
    first one always is): the prefix rule, stopping at the first failure."""
    k = valid.shape[1]
    idx = cached_arange(0, k, valid.device)
    ci, cj = conf[:, :, None], conf[:, None, :]  # [b, k, 1], [b, 1, k]
    before = (cj > ci) | ((cj == ci) & (idx[None, :] < idx[:, None]))  # [b, k, k]
    p = before.to(unit_dep.dtype)
    add = (p * (unit_dep + unit_dep.transpose(1, 2))).sum(dim=-1)  # [b, k]
    if inner_on_diagonal:
        add = add + unit_dep.diagonal(dim1=1, dim2=2)
    cost = add + (p * add[:, None, :]).sum(dim=-1)  # [b, k]
    first = ~before.any(dim=-1)  # [b, k]: nothing is visited before i
    ok = valid & ((cost <= epsilon) | first)  # [b, k]
    return ok & ~(before & ~ok[:, None, :]).any(dim=-1)  # i and every unit before it are ok


def prefix_cost(dep: torch.Tensor, order: torch.Tensor, diagonal: bool = True) -> torch.Tensor:
    """[b, k] C[:, t] = Σ of `dep` [b, k, k] over the ordered pairs among the first t + 1 units of
    `order` [b, k] — the summed dependency of every visiting prefix (the diagonal counts only when
    `diagonal`). The budget rule stops where it passes ε; head training fits it (`bce_prefix`)."""
    idx = order[:, :, None].expand_as(dep)
    perm = dep.gather(1, idx).gather(2, idx.transpose(1, 2))  # [b, k, k] in visiting order
    if not diagonal:
        perm.diagonal(dim1=1, dim2=2).zero_()
    return perm.cumsum(dim=1).cumsum(dim=2).diagonal(dim1=1, dim2=2)


def cluster_affinity(sym: torch.Tensor, member: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
    """[b, k, k] W[a, b] = max over rows i ∈ a of the mean over columns j ∈ b of sym[i, j],
    symmetrised by max. `sym` [b, c, c], `member` [b, k, c] (`m`: it as a float, if at hand).
    Entries of padding units are not meaningful (0 or −inf), nor is the diagonal W[a, a] (it
    reads `sym`'s diagonal, which callers need not clear)."""
    m = member.to(sym.dtype) if m is None else m
    share = m / m.sum(dim=-1, keepdim=True).clamp_min(1)  # [b, k, c]: 1/|b| on members of b
    row_to_unit = sym @ share.transpose(1, 2)  # [b, c, k]: mean over j ∈ unit
    w = row_to_unit[:, None, :, :].masked_fill(~member[:, :, :, None], float("-inf")).amax(dim=2)  # [b, k, k]
    return torch.maximum(w, w.transpose(1, 2))


def mutual_edges(
    affinity: torch.Tensor,  # [b, k, k] symmetric
    valid: torch.Tensor,  # [b, k] bool
    edge_floor: torch.Tensor | float,  # [b] or scalar: the affinity needed when ≤ 2 units
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLAD's conflict edges: (partner [b, k] long, has_edge [b, k] bool), a matching."""
    k = valid.shape[1]
    others = _pairs(valid)  # [b, k, k]
    masked = affinity.masked_fill(~others, float("-inf"))
    weight, top = masked.max(dim=-1)  # [b, k]: the first maximum; weight −inf without another unit
    mutual = top.gather(1, top) == cached_arange(0, k, valid.device)
    count = valid.sum(dim=1, keepdim=True)  # [b, 1]
    row_mean = torch.where(others, affinity, 0.0).sum(dim=-1) / (count - 1).clamp_min(1)  # [b, k]
    above = (weight >= row_mean) & (weight >= row_mean.gather(1, top))
    if isinstance(edge_floor, torch.Tensor) and edge_floor.dim():
        edge_floor = edge_floor[:, None]  # [b, 1]
    strong = (count > 2) | (weight >= edge_floor)  # the row-mean test passes every mutual top-1
    return top, mutual & above & strong & (weight > 0)  # 0 affinity: no dependency


def resolve_matching(partner, has_edge, key, valid) -> torch.Tensor:
    """[b, k] bool: the maximum-weight independent set of a matching — of every edge, the unit
    visited first stays (`key` [b, k], `_key`: higher first, ties to the left); every unit without
    an edge stays."""
    mine, theirs = key, key.gather(1, partner)
    first = (theirs > mine) | ((theirs == mine) & (partner < cached_arange(0, key.shape[1], key.device)))
    return valid & ~(has_edge & first)


def resolve_conflicts(edges, order, valid) -> torch.Tensor:
    """[b, k] bool: greedy independent set of any conflict graph (`edges` [b, k, k] symmetric):
    units in `order` join when no edge reaches an already chosen unit."""
    b, k = valid.shape
    chosen = torch.zeros_like(valid)
    rows = torch.arange(b, device=valid.device)
    for t in range(k):
        u = order[:, t]
        blocked = (edges[rows, u, :] & chosen).any(dim=1)
        chosen[rows, u] |= valid[rows, u] & ~blocked
    return chosen
