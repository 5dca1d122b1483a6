"""How sure the held-out headline is (`heldout.py`): a bootstrap over both item sets.

Per replicate, the held-out items and the evaluation items of a task are each resampled with
replacement (independently of each other; paired across the runs of each set, as in
`headline_ci.py`), each policy's knob is chosen again on the resampled held-out items, and that
run is scored on the resampled evaluation items. So the interval covers both sources of luck: which
knob the held-out draw picks, and how that knob does on the evaluation draw.

Per policy: the point value (the observed draws, as `heldout_headline` gives it) and the interval
of its evaluation TPF (the oracle's over decoding forwards); `within_rate`, the share of replicates whose chosen run stays within the
window on the evaluation items; and for dependency-guided policies the share of the oracle's
headroom closed, over the best in-window baseline, with its interval. A replicate where the policy
(or the oracle, or every baseline) has no in-window run gives no share; `share_n` counts those
that do, so read the share's interval together with `within_rate`. It does not decode.
"""

from __future__ import annotations

import numpy as np

from depmask.eval.headline import window_text
from depmask.eval.headline_ci import (
    check_bootstrap,
    headroom_shares,
    percentile_interval,
    point_value,
    resample_counts,
    run_stats,
)
from depmask.eval.summary import policy_width, run_key


def heldout_intervals(select_rows: list[dict], select_items: list[list[dict]], rows: list[dict],
                      items: list[list[dict]], reference: str = "low_confidence", tolerance: float = 0.01,
                      measure: str = "tpf_pooled", n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0) -> list[dict]:
    """`items[k]` are the graded items of `rows[k]` (likewise `select_items` of `select_rows`); the
    two sets hold the same runs (task, policy, knobs)."""
    for name, r, it in (("items", rows, items), ("select_items", select_rows, select_items)):
        if len(r) != len(it):
            raise ValueError(f"`{name}` has {len(it)} runs but its rows have {len(r)}; give one items list per row")
    check_bootstrap(measure, tolerance, n_boot, level)
    rng = np.random.default_rng(seed)
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        ev = [(r, it) for r, it in zip(rows, items) if r["task"] == task]
        sel = [(r, it) for r, it in zip(select_rows, select_items) if r["task"] == task]
        if not any(r["policy"] == reference for r, _ in ev) or not any(r["policy"] == reference for r, _ in sel):
            continue
        if [_key(r) for r, _ in sel] != [_key(r) for r, _ in ev]:
            raise ValueError(f"task {task!r}: the held-out and evaluation items must hold the same runs")
        draws = {}
        for name, runs in (("select", sel), ("eval", ev)):
            ids = [x["id"] for x in runs[0][1]]
            boot = resample_counts(rng, len(ids), n_boot)
            draws[name] = [run_stats(it, ids, np.vstack([np.ones((1, len(ids))), boot]), measure, len(ids))
                           for _, it in runs]  # replicate 0: the observed draw
        policies = [r["policy"] for r, _ in ev]
        result = _replicates(policies, draws["select"], draws["eval"], reference, tolerance)
        shares = headroom_shares({p: np.where(w, t, np.nan) for p, (t, w) in result.items()}, reference)
        for policy, (tpf, within) in result.items():
            row = {"task": task, "policy": policy, "measure": measure, "tolerance": tolerance,
                   "n_boot": n_boot, "level": level, "tpf": point_value(tpf[:1]),
                   **percentile_interval(tpf[1:], level, "tpf"), "within": bool(within[0]),
                   "within_rate": float(within[1:].mean())}
            if policy in shares:
                row.update({"share": point_value(shares[policy][:1]), **percentile_interval(shares[policy][1:], level, "share")})
            out.append(row)
    return out


def _key(row: dict) -> tuple:
    return row["task"], row["policy"], run_key(row)


def _replicates(policies, select_stats, eval_stats, reference, tolerance) -> dict[str, tuple]:
    """{policy: (evaluation TPF [R] of the run chosen per replicate — NaN where none qualified on
    the held-out items; the oracle's in decoding forwards —, within [R] bool)}."""
    ref_sel = np.max([s[0] for p, s in zip(policies, select_stats) if p == reference], axis=0)  # [R]
    ref_ev = np.max([s[0] for p, s in zip(policies, eval_stats) if p == reference], axis=0)
    out = {}
    for policy in dict.fromkeys(policies):
        idx = [k for k, p in enumerate(policies) if p == policy]
        probing = any(select_stats[k][2] for k in idx)
        which = 1 if probing else 0
        sel_value = np.stack([select_stats[k][1][which] for k in idx])  # [runs, R]
        ok = np.stack([select_stats[k][0] for k in idx]) >= ref_sel - tolerance - 1e-12
        score = np.where(ok, sel_value, -np.inf)
        sel_acc = np.stack([select_stats[k][0] for k in idx])
        top = score == score.max(axis=0)  # at equal value the more accurate run, as `headline`
        chosen = np.where(top, sel_acc, -np.inf).argmax(axis=0)  # [R]
        picked = ok.any(axis=0)
        cols = np.arange(len(chosen))
        tpf = np.stack([eval_stats[k][1][which] for k in idx])[chosen, cols]
        acc = np.stack([eval_stats[k][0] for k in idx])[chosen, cols]
        within = picked & (acc >= ref_ev - tolerance - 1e-12)
        out[policy] = (np.where(picked, tpf, np.nan), within)
    return out


def heldout_intervals_table(rows: list[dict]) -> str:
    """Per task and policy: evaluation TPF [lo, hi], how often the chosen run stays in the window,
    and the headroom share [lo, hi]."""
    if not rows:
        return "(no held-out intervals)"
    width = policy_width(rows)
    r0 = rows[0]
    head = (f"Held-out choice, bootstrap over both item sets ({r0['n_boot']} replicates, "
            f"{100 * r0['level']:.0f}% intervals; within {window_text(r0['tolerance'])}, "
            f"TPF = {'pooled' if r0['measure'] == 'tpf_pooled' else 'mean over items'}):")
    cols = f"{'task':<12} {'policy':<{width}} {'TPF [interval]':>22} {'stays in window':>16} {'share [interval]':>24}"
    lines = [head, cols, "-" * len(cols)]
    for r in rows:
        tpf = "—" if r["tpf"] is None else f"{r['tpf']:.2f}"
        if r.get("tpf_lo") is not None:
            tpf += f" [{r['tpf_lo']:.2f}, {r['tpf_hi']:.2f}]"
        share = ""
        if "share" in r:
            share = "—" if r["share"] is None else f"{100 * r['share']:.0f} %"
            if r.get("share_lo") is not None:
                share += f" [{100 * r['share_lo']:.0f}, {100 * r['share_hi']:.0f}]"
        lines.append(f"{r['task']:<12} {r['policy']:<{width}} {tpf:>22} {100 * r['within_rate']:>15.0f}% {share:>24}")
    return "\n".join(lines)
