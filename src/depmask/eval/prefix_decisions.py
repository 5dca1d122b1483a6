"""Prefix decisions: how safe are the sets a stopping rule commits, at equal parallelism?

Shapes: `b` states, `m` masked positions (padded; `valid` marks the real ones).

The budget rule (and Fast-dLLM's threshold rule) visit a state's masked positions in confidence
order and only decide where to stop. So a rule is fully described, per state, by the prefix length
it commits; and the danger of that prefix is its *true* cost, the summed empirical TV influence
over its ordered pairs, `C_t = Σ_{i ≠ j ≤ t} TV[i, j]` (the quantity the oracle bounds by ε).

`prefix_costs` gives, per state, the true cost, a predicted cost (the head's TV summed the same
way) and the sorted confidences of every prefix. `decision_table` then compares, for each oracle
budget ε, three rules at the same mean prefix length:
- `oracle`: the longest prefix whose true cost is ≤ ε (it never exceeds ε, by construction);
- `head`: the longest prefix whose predicted cost is ≤ ε', ε' chosen so its mean length matches;
- `threshold`: the positions with confidence ≥ τ (at least one), τ chosen the same way;
and reports each rule's mean true cost, `exceed`, the share of states whose committed prefix has
a true cost above ε — sets the oracle would have refused — and `far`, the share above 2ε. A
predictor with `exceed` near 0 makes the oracle's decisions on these states; the threshold rule
shows what confidence alone does.

What it does not do: load harvests or heads, print or plot (`commands/eval_predictor.py` does).
"""

from __future__ import annotations

import numpy as np
import torch

from depmask.decoding.selector import prefix_cost
from depmask.predictor import pair_mask

_HEAD_GRID = np.geomspace(1e-4, 1e3, 701)  # ε' candidates for the head
_TAU_GRID = np.linspace(0.0, 1.0, 1001)  # τ candidates for the threshold rule


def prefix_costs(
    tv: torch.Tensor, pred: torch.Tensor, confidence: torch.Tensor, valid: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per state, over its prefixes in confidence order (column t: the first t + 1 positions):
    the true cost `[b, m]`, the predicted cost `[b, m]` (both +inf past the state's last real
    position) and the sorted confidences `[b, m]` (−inf there). `tv`, `pred` `[b, m, m]`."""
    if tv.shape != pred.shape or tv.shape != (*valid.shape, valid.shape[1]):
        raise ValueError(f"`tv` {tuple(tv.shape)} and `pred` {tuple(pred.shape)} must both be [b, m, m] "
                         f"= {[*valid.shape, valid.shape[1]]} like `valid`")
    valid = valid.bool()
    pairs = pair_mask(valid).double()  # [b, m, m]
    conf = confidence.double().masked_fill(~valid, float("-inf"))  # [b, m]
    order = conf.argsort(dim=1, descending=True, stable=True)  # [b, m]
    live = valid.gather(1, order)  # [b, m]: prefixes that end on a real position
    true = prefix_cost(tv.double() * pairs, order, diagonal=False).masked_fill(~live, float("inf"))
    guess = prefix_cost(pred.double() * pairs, order, diagonal=False).masked_fill(~live, float("inf"))
    return true.cpu().numpy(), guess.cpu().numpy(), conf.gather(1, order).cpu().numpy()


def budget_lengths(cost: np.ndarray, epsilon: float) -> np.ndarray:
    """`[b]` the prefix length the budget rule commits: the positions up to the first prefix whose
    cost passes `epsilon`, at least one (costs are non-decreasing along a row)."""
    ok = np.minimum.accumulate(cost <= epsilon, axis=1)
    return np.maximum(ok.sum(axis=1), 1)


def threshold_lengths(conf_sorted: np.ndarray, tau: float) -> np.ndarray:
    """`[b]` the prefix length Fast-dLLM's threshold rule commits: confidence ≥ `tau`, at least one."""
    return np.maximum((conf_sorted >= tau).sum(axis=1), 1)


def _matched(lengths_at, grid: np.ndarray, target: float) -> tuple[float, np.ndarray]:
    """The grid knob whose mean length is closest to `target` (the first of ties), and its lengths."""
    best = min(grid, key=lambda g: abs(lengths_at(g).mean() - target))
    return float(best), lengths_at(best)


def decision_table(
    true: np.ndarray, guess: np.ndarray, conf_sorted: np.ndarray, epsilons: tuple[float, ...] = (0.3, 1.0, 2.0)
) -> list[dict]:
    """One row per (oracle ε, rule) — see the module docstring; `true`, `guess`, `conf_sorted` are
    `prefix_costs`' arrays, rows of states with at least one real position."""
    if not len(true):
        raise ValueError("no state to compare: `true` is empty")
    if any(e <= 0 for e in epsilons):
        raise ValueError(f"`epsilons` ({epsilons}) must all be > 0")
    rows = []
    states = np.arange(len(true))
    for eps in epsilons:
        oracle = budget_lengths(true, eps)
        target = float(oracle.mean())
        head_eps, head = _matched(lambda e: budget_lengths(guess, e), _HEAD_GRID, target)
        tau, thr = _matched(lambda t: threshold_lengths(conf_sorted, t), _TAU_GRID, target)
        for rule, knob, lengths in (("oracle", eps, oracle), ("head", head_eps, head), ("threshold", tau, thr)):
            cost = true[states, lengths - 1]
            rows.append({"epsilon": eps, "rule": rule, "knob": knob, "mean_length": float(lengths.mean()),
                         "mean_true_cost": float(cost.mean()), "exceed": float((cost > eps).mean()),
                         "far": float((cost > 2 * eps).mean()), "n_states": len(true)})
    return rows


def decision_text(rows: list[dict]) -> str:
    head = (f"{'oracle ε':>9} {'rule':<10} {'knob':>8} {'mean length':>12} {'mean true cost':>15} {'exceed ε':>9} "
            f"{'over 2ε':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['epsilon']:>9g} {r['rule']:<10} {r['knob']:>8.3g} {r['mean_length']:>12.2f} "
                     f"{r['mean_true_cost']:>15.4f} {100 * r['exceed']:>8.1f}% {100 * r['far']:>7.1f}%")
    return "\n".join(lines)
