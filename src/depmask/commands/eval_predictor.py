"""`depmask eval predictor --harvest DIR`: how well dependency scores predict the empirical influence.

On held-out harvest states — the val examples of the head-training split rule (`--split val`,
`in_val(example_id, val_fraction, split_seed)`), or every state of a separate harvest
(`--split all`, e.g. one harvested from the test split) — scores each ordered pair of masked
positions with the trained dependency head and the training-free baselines of
`depmask.eval.predictor_quality` (attention, distance, uncertainty, confidence product), and
compares each with the empirical TV influence: AUROC, AP, Spearman, precision@k.

Prints the table (score × metric) and writes into `--output`: `predictor.json` (one row per
score: score, auroc, ap, spearman, precision_at_k, n_pairs, n_positive, n_states),
and, with a head, `reliability.png` (the head's binned predicted TV against the empirical TV, and
the pair counts per bin), `reliability.json` (the bins behind the plot and their ECE) and `decisions.json` (the
prefixes the oracle, the head and the threshold rule commit at equal mean length, and how
dangerous they are: `eval/prefix_decisions.py`).

It refuses a head whose base-model fingerprint or hidden size differs from the harvest's. It does
not run the base model (the harvest holds everything) nor train anything.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from depmask.eval.plots import pyplot, save_figure
from depmask.eval.predictor_quality import (
    BASELINES,
    baseline_scores,
    flatten_pairs,
    pair_states,
    reliability_bins,
    score_metrics,
)
from depmask.eval.prefix_decisions import decision_table, decision_text, prefix_costs
from depmask.models.fingerprint import same_model

SPLITS = ("val", "all")
METRICS = ("auroc", "ap", "spearman", "precision_at_k")
_COLUMNS = ["example_id", "positions", "confidence", "entropy", "hidden", "attention", "tv"]


OUTPUTS = ("predictor.json", "settings.json", "reliability.json", "reliability.png", "decisions.json")

def _load_head(head: str, info: dict, harvest: str):
    from depmask.predictor import DependencyHead
    from depmask.predictor.io import capture_layers_problem

    model = DependencyHead.from_pretrained(head)
    problems = []
    if model.base_fingerprint is not None and not same_model(model.base_fingerprint, info["fingerprint"]):
        problems.append(f"head `base_fingerprint` is {model.base_fingerprint!r}, harvest fingerprint is "
                        f"{info['fingerprint']!r}")
    if model.hidden_size != int(info["hidden_size"]):
        problems.append(f"head hidden size is {model.hidden_size}, harvest hidden size is {info['hidden_size']}")
    layers = capture_layers_problem(model.use_attention, model.training_manifest,
                                    (info.get("config") or {}).get("capture_layers"))
    if layers:
        problems.append(layers)
    if problems:
        raise ValueError(f"`head` ({head}) does not match `harvest` ({harvest}): " + "; ".join(problems))
    return model


def _warn_if_not_held_out(model, harvest: str, split: str, val_fraction: float, split_seed: int) -> None:
    from depmask.data_gen.dataset import harvest_digest, harvest_info

    manifest = model.training_manifest or {}
    trained_on = manifest.get("harvest")
    recorded = manifest.get("harvest_sha256")  # since 2026-11-30; the path alone was relative to
    if recorded is not None:  # the training command's directory, so from elsewhere nothing matched
        info = harvest_info(harvest)
        if recorded != harvest_digest(info):
            return
    elif trained_on is None or Path(trained_on).resolve() != Path(harvest).resolve():
        return
    if split == "all":
        print(f"warning: the head was trained on {harvest}; `--split all` includes its training states")
    elif (manifest.get("val_fraction"), manifest.get("split_seed")) != (val_fraction, split_seed):
        print(f"warning: the head was trained on {harvest} with val_fraction={manifest.get('val_fraction')}, "
              f"split_seed={manifest.get('split_seed')}; this split (val_fraction={val_fraction}, "
              f"split_seed={split_seed}) is not its held-out set")


def _select(data, split: str, val_fraction: float, split_seed: int) -> list[int]:
    if split == "all":
        return list(range(len(data)))
    from depmask.data_gen.dataset import column_values
    from depmask.train.head_data import in_val

    return [i for i, e in enumerate(column_values(data, "example_id")) if in_val(str(e), val_fraction, split_seed)]


def _collect(data, indices: list[int], model, batch_size: int) -> tuple[dict[str, list], list, list, list, list]:
    from depmask.train.head_data import collate_states

    names = (["head"] if model is not None else []) + list(BASELINES)
    scores: dict[str, list] = {n: [] for n in names}
    tvs, states, lows, prefixes = [], [], [], []
    for start in range(0, len(indices), batch_size):
        rows = [{**data[i], "state": i} for i in indices[start:start + batch_size]]
        batch = collate_states(rows)
        valid = batch["valid"]  # [b, m]
        per_batch = baseline_scores(batch)
        if model is not None:
            per_batch["head"] = model.predict(batch["hidden"], batch["positions"], valid, batch["confidence"],
                                              batch["entropy"], batch["attention"] if model.use_attention else None)
            prefixes.append(prefix_costs(batch["tv"], per_batch["head"], batch["confidence"], valid))
        for n in names:
            scores[n].append(flatten_pairs(per_batch[n], valid))
        tvs.append(flatten_pairs(batch["tv"], valid))
        states.append(pair_states(batch["state"], valid))
        conf = batch["confidence"]
        lows.append(flatten_pairs(torch.minimum(conf[:, :, None], conf[:, None, :]), valid))  # the pair's lower
    return scores, tvs, states, lows, prefixes


def _stack_prefixes(prefixes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-batch `prefix_costs` arrays as one, padded to the widest batch (+inf / −inf)."""
    width = max(t.shape[1] for t, _, _ in prefixes)

    def pad(a: np.ndarray, value: float) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value)

    true, guess, conf = (np.concatenate([pad(parts[i], v) for parts in prefixes])
                         for i, v in ((0, np.inf), (1, np.inf), (2, -np.inf)))
    return true, guess, conf


def _table(rows: list[dict]) -> str:
    def fmt(v) -> str:
        return "—" if v is None else f"{v:.3f}"

    head = f"{'score':<24}" + "".join(f"{m:>16}" for m in METRICS) + f"{'pairs':>10}{'positive':>10}{'states':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['score']:<24}" + "".join(f"{fmt(r[m]):>16}" for m in METRICS)
                     + f"{r['n_pairs']:>10}{r['n_positive']:>10}{r['n_states']:>8}")
    return "\n".join(lines)


def _plot_reliability(pred: np.ndarray, tv: np.ndarray, bins: list[dict], path: Path, title: str) -> Path:
    plt = pyplot()

    fig, (ax, hist) = plt.subplots(1, 2, figsize=(9, 3.8))
    rng = np.random.default_rng(0)
    shown = rng.choice(len(pred), size=min(len(pred), 5000), replace=False) if len(pred) else []
    ax.scatter(pred[shown], tv[shown], s=2, alpha=0.15, color="tab:gray", label="pairs (≤ 5000 shown)")
    if bins:
        ax.plot([b["mean_pred"] for b in bins], [b["mean_tv"] for b in bins], marker="o", color="tab:blue",
                label="bin mean")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="black", label="calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted TV (head)", ylabel="empirical TV", title=title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    hist.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["n"] for b in bins],
             width=[b["hi"] - b["lo"] for b in bins], color="tab:blue", alpha=0.7, edgecolor="white")
    hist.set(yscale="log", xlim=(0, 1), xlabel="predicted TV (head)", ylabel="pairs per bin")
    hist.grid(alpha=0.3)
    return save_figure(fig, path)


def eval_predictor(
    harvest: str,
    head: str | None = "models/tiny-tasks-head",
    split: str = "val",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    positive_threshold: float = 0.1,
    k: int = 5,
    batch_size: int = 256,
    confident: float | None = None,
    decisions: list[float] | None = None,
    output: str = "outputs/eval/predictor",
) -> list[dict]:
    """Score the head and the baselines against the empirical TV influence on held-out states.

    Args:
        harvest: a harvest directory (`depmask harvest`), verified before use.
        head: a dependency-head directory (`save_pretrained`); None scores the baselines only.
        split: "val" = the val examples of the head-training split rule; "all" = every state
            (for a separate held-out harvest, e.g. of the test split).
        val_fraction: share of examples in val (as in head training; used with `split` "val").
        split_seed: seed of the example-level split (as in head training).
        positive_threshold: TV at or above which a pair counts as dependent (AUROC, AP, precision@k).
        k: top-k pairs per state for precision@k.
        batch_size: states per head forward.
        confident: also score only the pairs whose two positions both have confidence ≥ this —
            the pairs a confidence-ordered rule (threshold, the budget rule's prefix) decides
            between; extra rows named `<score> | c ≥ <confident>`. None: all pairs only.
        decisions: oracle budgets ε at which to compare the prefixes that the oracle, the head
            and the threshold rule commit at equal mean length (`eval/prefix_decisions.py`):
            their true cost, and how often it exceeds ε; printed and written to decisions.json.
            Default [0.3, 1, 2]; [] skips it. Needs a head.
        output: directory for predictor.json, settings.json (what was scored: harvest, head, split,
            thresholds), reliability.png, reliability.json and decisions.json; a file of an earlier
            run that this one does not write is removed, so that every file there is this run's.

    Returns:
        One row per score: score, auroc, ap, spearman, precision_at_k, n_pairs, n_positive, n_states.
    """
    from depmask.data_gen.dataset import HarvestError, harvest_digest, harvest_info, load_harvest
    from depmask.data_gen.shards import write_atomic
    from depmask.paths import output_dir

    if split not in SPLITS:
        raise ValueError(f"`split` ({split!r}) must be one of {SPLITS}")
    if split == "val" and not 0 < val_fraction < 1:
        raise ValueError(f"`val_fraction` ({val_fraction}) must lie in (0, 1)")
    if not 0 < positive_threshold <= 1:
        raise ValueError(f"`positive_threshold` ({positive_threshold}) must lie in (0, 1]")
    if k < 1:
        raise ValueError(f"`k` ({k}) must be >= 1")
    if batch_size < 1:
        raise ValueError(f"`batch_size` ({batch_size}) must be >= 1")
    if confident is not None and not 0 <= confident < 1:
        raise ValueError(f"`confident` ({confident}) must lie in [0, 1) or be None")
    decisions = [0.3, 1.0, 2.0] if decisions is None else list(decisions)
    if not all(isinstance(e, (int, float)) and math.isfinite(e) and e > 0 for e in decisions):
        raise ValueError(f"`decisions` ({decisions}) must be finite oracle budgets ε > 0")
    out = output_dir("output", output)  # a file there is named now, not after the scoring
    info = harvest_info(harvest)
    model = _load_head(head, info, harvest) if head is not None else None
    if model is not None:
        _warn_if_not_held_out(model, harvest, split, val_fraction, split_seed)
    data = load_harvest(harvest).select_columns(_COLUMNS)
    indices = _select(data, split, val_fraction, split_seed)
    if not indices:
        raise HarvestError(f"`split` {split!r} selects no state of {harvest} ({len(data)} states; "
                           f"val_fraction={val_fraction}, split_seed={split_seed})")
    with torch.inference_mode():
        scores, tvs, states, lows, prefixes = _collect(data, indices, model, batch_size)
    tv, state, low = np.concatenate(tvs), np.concatenate(states), np.concatenate(lows)
    rows = [{"score": name, **score_metrics(np.concatenate(parts), tv, state, positive_threshold, k)}
            for name, parts in scores.items()]
    if confident is not None:
        keep = low >= confident
        rows += [{"score": f"{name} | c ≥ {confident:g}",
                  **score_metrics(np.concatenate(parts)[keep], tv[keep], state[keep], positive_threshold, k)}
                 for name, parts in scores.items()]
    print(f"{len(indices)} {split} states of {harvest}; positives: TV >= {positive_threshold}; precision@{k}")
    print(_table(rows))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "predictor.json", json.dumps(rows, indent=2, allow_nan=False).encode())
    settings = {"harvest": str(harvest), "harvest_sha256": harvest_digest(info), "model": info.get("fingerprint"),
                "head": None if head is None else str(head), "split": split, "val_fraction": val_fraction,
                "split_seed": split_seed, "positive_threshold": positive_threshold, "k": k, "confident": confident,
                "decisions": decisions if model is not None else [], "states": len(indices)}
    write_atomic(out / "settings.json", json.dumps(settings, indent=2).encode())  # what the files beside it are of
    written = [out / "predictor.json", out / "settings.json"]
    if model is not None:
        pred = np.concatenate(scores["head"])
        bins = reliability_bins(pred, tv)
        ece = sum(b["n"] * abs(b["mean_pred"] - b["mean_tv"]) for b in bins) / max(len(tv), 1)
        ece = ece if math.isfinite(ece) else None
        write_atomic(out / "reliability.json",
                     json.dumps({"ece": ece, "bins": bins}, indent=2, allow_nan=False).encode())
        title = f"{len(indices)} {split} states, {len(tv)} pairs"
        written += [out / "reliability.json", _plot_reliability(pred, tv, bins, out / "reliability.png", title)]
        if ece is not None:
            print(f"head calibration: mean |predicted − empirical TV| over bins (ECE) = {ece:.4f}")
        if decisions:
            table = decision_table(*_stack_prefixes(prefixes), epsilons=tuple(decisions))
            print("prefixes committed at equal mean length; true cost = summed empirical TV of the prefix:")
            print(decision_text(table))
            write_atomic(out / "decisions.json", json.dumps(table, indent=2, allow_nan=False).encode())
            written.append(out / "decisions.json")
    for name in OUTPUTS:  # an earlier run's file this run did not write (its head's plot, its decisions)
        if out / name not in written:
            (out / name).unlink(missing_ok=True)
    print("wrote " + ", ".join(str(p) for p in written))
    return rows
