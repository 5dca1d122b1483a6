"""How sure the headline is: a paired bootstrap over items of the TPF each policy reaches at the
accuracy of one-token-per-step decoding, and of the share of the oracle's headroom it closes.

The headline (`headline.py`) is a maximum over each policy's sweep of runs that pass an accuracy
window. At n = 1000 the window is 10 items wide, so which sweep point qualifies, and its TPF, move
with the draw of items. The items are i.i.d. draws of the task's test distribution (a task's
`examples`: a repeated prompt is a second draw, kept), so resampling them estimates that
distribution's spread. Here the items of a task are resampled with replacement, the same draw
for every run of the task (paired: runs are compared on the same items), and the whole headline
is recomputed per replicate — the reference accuracy, which runs qualify, each policy's best. The
interval is the percentile interval (`level`, default 95 %) over the replicates in which the
policy has a qualifying run; `tpf_n` counts them. A policy at the edge of the window qualifies in
only some replicates, and its interval describes those: the printed table says in how many
(e.g. "in 683 of 1000 resamples") whenever it is not all of them. A share also needs the oracle
above the best baseline in the replicate (`share_n`).

Headroom, per task and replicate: `best` = the highest headline of today's decoders
(`BASELINES` present in the rows), `oracle` = the oracle's headline in decoding forwards (its
probe forwards excluded); a policy that is neither closes `(policy − best) / (oracle − best)` of
it. A replicate where some term is missing (no qualifying run) or the oracle is not above the
best baseline gives no share; `share_n` counts those that do.

It does not decode and does not read files: `eval decode` hands it the items it has.
"""

from __future__ import annotations

import numpy as np

from depmask.eval.headline import MEASURES, check_tolerance, window_text
from depmask.eval.summary import policy_width

BASELINES = ("threshold", "factor", "entropy_bound", "dilated", "margin", "entropy", "random")
ORACLE = "oracle"
# presets the headline finds by name: the reference, the oracle and the baselines (no `label`)
ROLE_PRESETS = frozenset({"low_confidence", ORACLE, *BASELINES})


def headline_intervals(
    rows: list[dict],
    items: list[list[dict]],
    reference: str = "low_confidence",
    tolerance: float = 0.01,
    measure: str = "tpf_pooled",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """Per task and policy: the headline's point value and its bootstrap interval, and for
    dependency-guided policies the share of the oracle's headroom closed, with its interval.

    `items[k]` are the graded items of `rows[k]` (`id`, `correct`, `nfe`, `probe_nfe`, `tpf`,
    `afp`, `committed`), the same ids for every run of a task.
    """
    if len(rows) != len(items):
        raise ValueError(f"`items` has {len(items)} runs but `rows` has {len(rows)}; give one items list per row")
    check_bootstrap(measure, tolerance, n_boot, level)
    rng = np.random.default_rng(seed)
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        runs = [(r, it) for r, it in zip(rows, items) if r["task"] == task]
        if not any(r["policy"] == reference for r, _ in runs):
            continue
        ids = [x["id"] for x in runs[0][1]]
        counts = resample_counts(rng, len(ids), n_boot)  # [B, n]
        full = np.ones((1, len(ids)))  # the observed sample, as one "replicate"
        point = _headlines(runs, ids, full, reference, tolerance, measure)
        boot = _headlines(runs, ids, counts, reference, tolerance, measure)
        point_share, boot_share = headroom_shares(point, reference), headroom_shares(boot, reference)
        for policy, values in boot.items():
            row = {"task": task, "policy": policy, "measure": measure, "tolerance": tolerance,
                   "n_boot": n_boot, "level": level,
                   "tpf": point_value(point[policy]), **percentile_interval(values, level, "tpf")}
            if policy in boot_share:
                row.update({"share": point_value(point_share[policy]), **percentile_interval(boot_share[policy], level, "share")})
            out.append(row)
    return out


def resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """`[n_boot, n]` float: how often each of n items is drawn in each with-replacement resample."""
    return rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)


def check_bootstrap(measure: str, tolerance: float, n_boot: int, level: float) -> None:
    """The arguments every bootstrap of a headline takes, checked and named."""
    if measure not in MEASURES:
        raise ValueError(f"`measure` ({measure!r}) must be one of {tuple(MEASURES)}")
    if n_boot < 1:
        raise ValueError(f"`n_boot` ({n_boot}) must be >= 1")
    if not 0 < level < 1:
        raise ValueError(f"`level` ({level}) must lie in (0, 1)")
    check_tolerance(tolerance)


def _headlines(runs, ids, counts, reference, tolerance, measure) -> dict[str, np.ndarray]:
    """{policy: [B] headline per replicate (NaN: no qualifying run)}; the oracle in decode forwards."""
    n = counts.shape[1]
    stats = [(r["policy"], run_stats(it, ids, counts, measure, n)) for r, it in runs]
    ref_acc = np.max([acc for p, (acc, _, _) in stats if p == reference], axis=0)  # [B]
    out: dict[str, np.ndarray] = {}
    for policy in dict.fromkeys(p for p, _ in stats):
        mine = [s for p, s in stats if p == policy]
        probing = any(prb for _, _, prb in mine)
        best = np.full(counts.shape[0], np.nan)
        best_acc = np.full(counts.shape[0], -np.inf)
        for acc, values, _ in mine:
            value = values[1] if probing else values[0]
            ok = acc >= ref_acc - tolerance - 1e-12
            # NaN-aware running max; at equal value the more accurate run (as `headline`)
            better = ok & (~(value <= best) | ((value == best) & (acc > best_acc)))
            best, best_acc = np.where(better, value, best), np.where(better, acc, best_acc)
        out[policy] = best
    return out


def run_stats(items, ids, counts, measure, n):
    """(accuracy [B], (measure [B], its decoding-forward twin [B]), probing) of one run."""
    by_id = {x["id"]: x for x in items}
    missing = [i for i in ids if i not in by_id]
    if missing or len(by_id) != len(ids):
        raise ValueError(f"the runs of a task must cover the same items; this one differs on {missing[:3] or 'extra ids'}")
    col = {k: np.array([float(by_id[i].get(k, 0) or 0) for i in ids]) for k in
           ("correct", "nfe", "probe_nfe", "tpf", "afp", "committed")}
    acc = counts @ col["correct"] / n
    if measure == "tpf":
        values = (counts @ col["tpf"] / n, counts @ col["afp"] / n)
    else:
        tokens = counts @ col["committed"]
        values = (tokens / (counts @ col["nfe"]), tokens / (counts @ (col["nfe"] - col["probe_nfe"])))
    return acc, values, bool(col["probe_nfe"].any())


def headroom_shares(heads: dict[str, np.ndarray], reference: str = "low_confidence") -> dict[str, np.ndarray]:
    """{guided policy: [B] share of the oracle's headroom over the best baseline it closes}; NaN
    in `heads` marks a policy with no qualifying run in that replicate."""
    bases = [v for p, v in heads.items() if p in BASELINES]
    if ORACLE not in heads or not bases:
        return {}
    best = np.max(np.nan_to_num(np.stack(bases), nan=-np.inf), axis=0)  # [B]
    room = heads[ORACLE] - best
    room = np.where(np.isfinite(room) & (room > 0), room, np.nan)
    skip = {ORACLE, *BASELINES}
    return {p: (v - best) / room for p, v in heads.items() if p not in skip and p != reference}


def percentile_interval(values: np.ndarray, level: float, name: str) -> dict:
    good = values[np.isfinite(values)]
    if not len(good):
        return {f"{name}_lo": None, f"{name}_hi": None, f"{name}_n": 0}
    lo, hi = np.quantile(good, [(1 - level) / 2, (1 + level) / 2])
    return {f"{name}_lo": float(lo), f"{name}_hi": float(hi), f"{name}_n": int(len(good))}


def point_value(value: np.ndarray) -> float | None:
    v = float(value[0])
    return v if np.isfinite(v) else None


def _coverage(n: int | None, n_boot: int) -> str:
    """' (in 683 of 1000 resamples)' when an interval rests on fewer replicates than were drawn
    (counts: a percentage rounds 997 of 1000 to "100%")."""
    return "" if n is None or n >= n_boot else f" (in {n} of {n_boot} resamples)"


def intervals_table(rows: list[dict]) -> str:
    """The printed view: per task and policy, TPF [lo, hi] and the headroom share [lo, hi]."""
    if not rows:
        return ""
    level = round(100 * rows[0]["level"])
    pw = policy_width(rows)
    window = window_text(rows[0].get("tolerance", 0.01))
    lines = [f"Headline ({window}) with {level}% bootstrap intervals ({rows[0]['n_boot']} paired item resamples; "
             f"TPF = {rows[0]['measure']}; share = of the oracle's headroom over the best baseline):"]
    for r in rows:
        tpf = "—" if r["tpf"] is None else f"{r['tpf']:.2f}"
        band = "" if r["tpf_lo"] is None else f" [{r['tpf_lo']:.2f}, {r['tpf_hi']:.2f}]"
        share = ""
        if "share" in r and r["share"] is not None:
            share = f"   share {100 * r['share']:.0f}%"
            if r["share_lo"] is not None:
                share += f" [{100 * r['share_lo']:.0f}, {100 * r['share_hi']:.0f}]"
            share += _coverage(r.get("share_n"), r["n_boot"])
        lines.append(f"{r['task']:<12} {r['policy']:<{pw}} {tpf:>6}{band:<16}{_coverage(r.get('tpf_n'), r['n_boot'])}"
                     f"{share}")
    return "\n".join(lines)
