"""The headline: the TPF each policy reaches at the accuracy of one-token-per-step decoding.

For each task, the reference is the accuracy of `low_confidence` (one token per forward); a run
qualifies when its accuracy is within `tolerance` (1 point) of it, and a policy's figure is its
best qualifying TPF over its sweep (None when no run qualifies). Probing policies (the oracle)
pay extra forwards that TPF counts; their `decode_tpf` — tokens per *decoding* step, i.e. AFP —
is the parallelism a perfect predictor would allow, and is reported beside it. It does not decode.
"""

from __future__ import annotations

from depmask.eval.summary import knob_text


def headline(rows: list[dict], reference: str = "low_confidence", tolerance: float = 0.01) -> list[dict]:
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
            key = "afp" if probing else "tpf"
            best = max(ok, key=lambda r: r[key]) if ok else None
            out.append({"task": task, "policy": policy, "reference_accuracy": ref_acc,
                        "accuracy": best["accuracy"] if best else None, "knobs": knob_text(best) if best else "",
                        "tpf": best["tpf"] if best else None, "decode_tpf": best["afp"] if best else None,
                        "probing": probing})
    return out


def headline_table(rows: list[dict]) -> str:
    head = f"{'task':<12} {'policy':<15} {'best knobs':<22} {'accuracy':>9} {'TPF':>6} {'decode TPF':>11}"
    lines = ["TPF at the accuracy of one-token-per-step decoding (within 1 point):", head, "-" * len(head)]
    for r in rows:
        if r["accuracy"] is None:
            lines.append(f"{r['task']:<12} {r['policy']:<15} {'(no run within 1 point)':<22}")
            continue
        dec = f"{r['decode_tpf']:.2f}" + ("*" if r["probing"] else "")
        lines.append(f"{r['task']:<12} {r['policy']:<15} {r['knobs'][:22]:<22} {100 * r['accuracy']:>8.1f}% "
                     f"{r['tpf']:>6.2f} {dec:>11}")
    if any(r["probing"] for r in rows):
        lines.append("* the oracle's extra (probe) forwards excluded: the parallelism a perfect predictor allows")
    return "\n".join(lines)
