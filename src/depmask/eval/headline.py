"""The headline: the TPF each policy reaches at the accuracy of one-token-per-step decoding.

For each task, the reference is the accuracy of `low_confidence` (one token per forward); a run
qualifies when its accuracy is within `tolerance` (the window: 1 point by default; 0.005 is half a
point, 0 allows no loss at all) of it, and a policy's figure is its best qualifying TPF over its
sweep (None when no run qualifies). Every row names its window (`tolerance`). Probing policies
(the oracle) pay extra forwards that TPF counts; their `decode_tpf` — tokens per *decoding*
forward — is the parallelism a perfect predictor would allow, and is reported beside it.

`measure` picks which TPF (`summary.py` says how they differ): `tpf`, the mean over items of each
item's tokens per forward, or `tpf_pooled`, all tokens over all forwards (the compute per token).
Each headline row names its measure; the best knobs may differ between the two. It does not decode.
"""

from __future__ import annotations

from collections.abc import Sequence

from depmask.eval.summary import column_width, knob_text, policy_width, run_key

MEASURES = {"tpf": "afp", "tpf_pooled": "decode_tpf_pooled"}  # measure -> its decoding-forward twin
TITLES = {"tpf": "mean over items of tokens / forwards", "tpf_pooled": "pooled: all tokens / all forwards"}


def check_tolerance(tolerance: float) -> None:
    if not 0 <= tolerance <= 1:
        raise ValueError(f"accuracy window `tolerance` ({tolerance}) must lie in [0, 1] (a fraction: 0.01 is "
                         "1 point below one-token-per-step accuracy)")


def window_text(tolerance: float) -> str:
    """'1 point', '0.5 point', 'no loss'."""
    points = round(100 * tolerance, 6)
    return "no loss" if points == 0 else f"{points:g} point" + ("s" if points > 1 else "")


def headline(
    rows: list[dict], reference: str = "low_confidence", tolerance: float = 0.01, measure: str = "tpf"
) -> list[dict]:
    if measure not in MEASURES:
        raise ValueError(f"`measure` ({measure!r}) must be one of {tuple(MEASURES)}")
    check_tolerance(tolerance)
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        refs = [r for r in mine if r["policy"] == reference]
        if not refs:
            continue
        ref_acc = max(r["accuracy"] for r in refs)
        for policy in dict.fromkeys(r["policy"] for r in mine):
            ok = [r for r in mine if r["policy"] == policy and r["accuracy"] >= ref_acc - tolerance - 1e-12]
            probing = any(r.get("probe_nfe", 0) > 0 for r in mine if r["policy"] == policy)
            key = MEASURES[measure] if probing else measure
            # equal values: the more accurate run (not whichever the sweep lists first)
            best = max(ok, key=lambda r: (r[key], r["accuracy"])) if ok else None
            out.append({"task": task, "policy": policy, "measure": measure, "tolerance": tolerance,
                        "reference_accuracy": ref_acc,
                        "accuracy": best["accuracy"] if best else None, "knobs": knob_text(best) if best else "",
                        "run": run_key(best) if best else None,
                        "nfe": best["nfe"] if best else None, "tpf": best[measure] if best else None,
                        "decode_tpf": best[MEASURES[measure]] if best else None, "probing": probing})
    return out


def headline_table(rows: list[dict]) -> str:
    pw = policy_width(rows)
    measure = rows[0]["measure"] if rows else "tpf"
    window = window_text(rows[0].get("tolerance", 0.01) if rows else 0.01)
    within = "with no loss" if window == "no loss" else f"within {window}"
    kw = column_width([r["knobs"] for r in rows if r["accuracy"] is not None], 22)
    head = (f"{'task':<12} {'policy':<{pw}} {'best knobs':<{kw}} {'accuracy':>9} {'NFE':>6} {'TPF':>6} "
            f"{'decode TPF':>11}")
    lines = [f"TPF at the accuracy of one-token-per-step decoding ({within}); TPF = {TITLES[measure]}:",
             head, "-" * len(head)]
    for r in rows:
        if r["accuracy"] is None:
            lines.append(f"{r['task']:<12} {r['policy']:<{pw}} {'(no run ' + within + ')':<{kw}}")
            continue
        dec = f"{r['decode_tpf']:.2f}" + ("*" if r["probing"] else "")
        lines.append(f"{r['task']:<12} {r['policy']:<{pw}} {r['knobs']:<{kw}} {100 * r['accuracy']:>8.1f}% "
                     f"{r['nfe']:>6.2f} {r['tpf']:>6.2f} {dec:>11}")
    if any(r["probing"] for r in rows):
        lines.append("* the oracle's extra (probe) forwards excluded: the parallelism a perfect predictor allows")
    return "\n".join(lines)


def headline_report(rows: list[dict], reference: str = "low_confidence",
                    tolerances: Sequence[float] = (0.01,)) -> tuple[list[dict], str]:
    """The headline under both measures at every window in `tolerances`: its rows (for
    `headline.json`) and the printed tables."""
    if not tolerances:
        raise ValueError("`tolerances` is empty; give at least one accuracy window, e.g. [0.01]")
    tops = [headline(rows, reference, tolerance=t, measure=m) for t in tolerances for m in MEASURES]
    return [r for top in tops for r in top], "\n\n".join(headline_table(top) for top in tops if top)
