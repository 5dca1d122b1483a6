"""The headline with each policy's knob chosen on held-out items (`eval decode --select_n N`).

The plain headline (`headline.py`) takes each policy's best qualifying run *on the items it
reports*: the knob is selected on the test items themselves, which flatters every swept policy,
and a policy with a finer grid more. Here the knob is chosen on a disjoint draw of selection
items — the run with the best TPF within the window of one-token-per-step accuracy *on those
items* — and that run's accuracy and TPF on the evaluation items are what is reported, with
whether it stays within the window there (`within`). Nothing is re-selected on the evaluation
items; a policy with no qualifying run on the selection items reports None.

Rows carry both sides: `select_accuracy` / `select_tpf` (where the knob was chosen; for a probing
policy, the oracle, its TPF over decoding forwards, by which it is chosen as in the plain headline)
and `accuracy` / `tpf` / `decode_tpf` (the evaluation items), each side's reference accuracy, and
the measure and window. A dependency-guided policy's row also carries `share`, the share of the
oracle's headroom over the best of today's decoders it closes (as in `headline_ci.py`), counting
only runs that stay within the window on the evaluation items (None otherwise). It does not decode.
"""

from __future__ import annotations

import numpy as np

from depmask.eval.headline import MEASURES, headline, window_text
from depmask.eval.headline_ci import headroom_shares
from depmask.eval.summary import column_width, policy_width, run_key


def heldout_headline(select_rows: list[dict], rows: list[dict], reference: str = "low_confidence",
                     tolerance: float = 0.01, measure: str = "tpf") -> list[dict]:
    """One row per (task, policy) of `rows`: the knob `headline` chooses on `select_rows`, scored
    on `rows`."""
    chosen = {(c["task"], c["policy"]): c for c in headline(select_rows, reference, tolerance, measure)}
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        refs = [r["accuracy"] for r in mine if r["policy"] == reference]
        if not refs or (task, reference) not in chosen:
            continue
        ref_eval = max(refs)
        select_n = next(r["n"] for r in select_rows if r["task"] == task)
        start = len(out)
        for policy in dict.fromkeys(r["policy"] for r in mine):
            runs = [r for r in mine if r["policy"] == policy]
            pick = chosen.get((task, policy))
            pick = pick if pick is not None and pick["accuracy"] is not None else None
            scored = None
            if pick is not None:
                scored = next((r for r in runs if run_key(r) == pick["run"]), None)
                if scored is None:
                    raise ValueError(f"{task}/{policy}: the run chosen on the selection items "
                                     f"({pick['knobs']!r}) was not run on the evaluation items")
            probing = any(r.get("probe_nfe", 0) > 0 for r in runs)
            out.append({
                "task": task, "policy": policy, "measure": measure, "tolerance": tolerance,
                "select_n": select_n, "n": scored["n"] if scored else None,
                "knobs": pick["knobs"] if pick else "", "probing": probing,
                "select_reference_accuracy": chosen[(task, reference)]["reference_accuracy"],
                "select_accuracy": pick["accuracy"] if pick else None,
                # the oracle is chosen by its decoding TPF, as in the plain headline
                "select_tpf": (pick["decode_tpf"] if pick["probing"] else pick["tpf"]) if pick else None,
                "reference_accuracy": ref_eval,
                "accuracy": scored["accuracy"] if scored else None,
                "tpf": scored[measure] if scored else None,
                "decode_tpf": scored[MEASURES[measure]] if scored else None,
                "within": bool(scored["accuracy"] >= ref_eval - tolerance - 1e-12) if scored else None,
            })
        _shares(out[start:], reference)
    return out


def _shares(rows: list[dict], reference: str) -> None:
    """Set `share` on one task's rows (`headroom_shares` on the runs that stay in the window; a
    probing policy — the oracle, or a labelled crossing with the oracle's scorer — by its decoding
    TPF, as `heldout_ci` and `headline_ci` count it)."""
    heads = {r["policy"]: np.array([(r["decode_tpf"] if r["probing"] else r["tpf"])
                                    if r["within"] else np.nan]) for r in rows}
    shares = headroom_shares(heads, reference)
    for r in rows:
        share = shares.get(r["policy"])
        r["share"] = float(share[0]) if share is not None and np.isfinite(share[0]) else None


def heldout_table(rows: list[dict]) -> str:
    """Fixed-width table of `heldout_headline` rows (one measure and window)."""
    if not rows:
        return "(no held-out headline: `low_confidence` is needed on both item sets)"
    measure, tolerance = rows[0]["measure"], rows[0]["tolerance"]
    width = policy_width(rows)
    counts = sorted({(r["task"], r["select_n"], r["n"]) for r in rows if r["n"] is not None})
    sizes = ", ".join(f"{t} {a} / {b}" for t, a, b in counts)
    window = window_text(tolerance)
    within = "with no loss" if window == "no loss" else f"within {window}"
    head = (f"Each policy's knob chosen on held-out items ({within} of one-token-per-step "
            f"accuracy there), scored on the evaluation items (held-out / evaluation items: {sizes}); "
            f"TPF = {'pooled' if measure == 'tpf_pooled' else 'mean over items'}:")
    kw = column_width([r["knobs"] for r in rows if r["select_accuracy"] is not None], 22)
    cols = (f"{'task':<12} {'policy':<{width}} {'chosen knobs':<{kw}} {'held-out':>15} {'evaluation':>15} "
            f"{'decode TPF':>11}  within  share")
    lines = [head, cols, "-" * len(cols)]
    for r in rows:
        if r["select_accuracy"] is None:
            lines.append(f"{r['task']:<12} {r['policy']:<{width}} (no run {within} on the held-out items)")
            continue
        star = "*" if r["probing"] else ""
        sel = f"{100 * r['select_accuracy']:.1f}% {r['select_tpf']:.2f}{star}"
        ev = f"{100 * r['accuracy']:.1f}% {r['tpf']:.2f}"
        lines.append(f"{r['task']:<12} {r['policy']:<{width}} {r['knobs']:<{kw}} {sel:>15} {ev:>15} "
                     f"{r['decode_tpf']:>10.2f}{star}  {'yes' if r['within'] else 'NO':<6}"
                     + (f"  {100 * r['share']:.0f} %" if r["share"] is not None else ""))
    if any(r["probing"] for r in rows):
        lines.append("* over decoding forwards (probes excluded): the oracle is chosen, and its share counted, by it; "
                     "its evaluation column counts the probes")
    return "\n".join(lines)
