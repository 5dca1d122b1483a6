"""From per-item rows to one summary row per run, and the printed table.

A summary row holds `task`, `policy` (the preset name), the knob values, `accuracy` with its 95 %
Wilson interval (`accuracy_lo`, `accuracy_hi`), mean `nfe`, `probe_nfe`, `tpf`, `afp`,
`tpf_pooled`, `decode_tpf_pooled`, `kendall_tau`, `tokens_per_s` (committed answer tokens per
second of decoding), `seconds` and `n`, and `compile_select` ("jit" / "aot") for a run whose steps
were compiled (`depmask eval decode --compile_select`) — plain JSON that other tools read without
depmask (`to_json`: a mean that is undefined, such as τ when every item is decoded in one forward,
is null, an empty cell in `summary.csv`). It does not decode.

Two tokens-per-forward measures, because they rank policies differently:
- `tpf` is the mean over items of each item's committed tokens / forwards (`afp`: / decoding
  steps). An item decoded in one forward counts 16 on a 16-token answer, one in two forwards 8,
  so it rewards policies that finish many easy items in one step even when they spend many
  forwards on the hard ones.
- `tpf_pooled` is all committed tokens / all forwards of the run (`decode_tpf_pooled`: / decoding
  forwards, the probes of a probing policy left out): the inverse of the compute per token, the
  number a throughput claim rests on. At a fixed answer length it is that length / mean `nfe`.
"""

from __future__ import annotations

import json
import math


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (sensible at 0 % and 100 %)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


METRICS = ("accuracy", "accuracy_lo", "accuracy_hi", "nfe", "probe_nfe", "tpf", "afp", "tpf_pooled",
           "decode_tpf_pooled", "kendall_tau", "tokens_per_s", "seconds", "n")


def _mean(values) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else math.nan


def summarize(task: str, policy: str, knobs: dict, items: list[dict]) -> dict:
    n = len(items)
    correct = sum(bool(r["correct"]) for r in items)
    lo, hi = wilson_interval(correct, n)
    seconds = sum(r["seconds"] for r in items)
    tokens = sum(r["committed"] for r in items)
    forwards = sum(r["nfe"] for r in items)
    decode_forwards = forwards - sum(r.get("probe_nfe", 0) for r in items)
    return {
        "task": task, "policy": policy, **knobs,
        "accuracy": correct / n if n else math.nan, "accuracy_lo": lo, "accuracy_hi": hi,
        "nfe": _mean(r["nfe"] for r in items), "probe_nfe": _mean(r.get("probe_nfe", 0) for r in items),
        "tpf": _mean(r["tpf"] for r in items), "afp": _mean(r["afp"] for r in items),
        "tpf_pooled": tokens / forwards if forwards else math.nan,
        "decode_tpf_pooled": tokens / decode_forwards if decode_forwards else math.nan,
        "kendall_tau": _mean(r["kendall_tau"] for r in items),
        "tokens_per_s": tokens / seconds if seconds > 0 else math.nan, "seconds": seconds, "n": n,
    }


def plain(value):
    """`value` with every non-finite float (an undefined mean: τ when every item is decoded in one
    forward) replaced by None, through lists and dicts: what `summary.json` and the CSV hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def to_json(rows) -> str:
    """Standard JSON (no `NaN` token) of summary or headline rows: an undefined value is null."""
    return json.dumps(plain(rows), indent=2, allow_nan=False)


def policy_width(rows: list[dict]) -> int:
    """Width of the tables' policy column: 15, or the longest policy name (a sweep's `label`)."""
    return max([15, *(len(r["policy"]) for r in rows)])


def column_width(texts, least: int) -> int:
    """Width of a text column: `least`, or its longest entry (knobs are printed whole: a sweep over
    two knobs cut at a fixed width lost the second one's value)."""
    return max([least, *(len(t) for t in texts)])


RUN_FIELDS = ("compile_select",)  # how a run was decoded, not a knob of its policy (absent: eager)


def knob_text(row: dict) -> str:
    """A row's knobs for the tables (`epsilon=0.7`), the head's path left out: display only — two
    runs of one policy that differ in their head have the same text (`run_key` tells them apart)."""
    skip = {"task", "policy", "head", *METRICS, *RUN_FIELDS}
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k not in skip)


def run_key(row: dict) -> str:
    """Every knob of a row's run, the head included: what identifies a run within its task and
    policy (matching a run chosen on one item set with its twin on another)."""
    skip = {"task", "policy", *METRICS, *RUN_FIELDS}
    return json.dumps({k: v for k, v in row.items() if k not in skip}, sort_keys=True, default=str)


def table(rows: list[dict]) -> str:
    pw, kw = policy_width(rows), column_width(map(knob_text, rows), 28)
    head = (f"{'task':<12} {'policy':<{pw}} {'knobs':<{kw}} {'accuracy (95% CI)':>22} {'NFE':>7} {'TPF':>6} "
            f"{'pooled':>6} {'AFP':>6} {'tok/s':>8} {'tau':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = f"{100 * r['accuracy']:.1f} [{100 * r['accuracy_lo']:.1f}, {100 * r['accuracy_hi']:.1f}]"
        lines.append(f"{r['task']:<12} {r['policy']:<{pw}} {knob_text(r):<{kw}} {acc:>22} {r['nfe']:>7.2f} "
                     f"{r['tpf']:>6.2f} {r['tpf_pooled']:>6.2f} {r['afp']:>6.2f} {r['tokens_per_s']:>8.1f} {r['kendall_tau']:>6.2f}")
    return "\n".join(lines)
