"""Predictor quality: how well a pairwise dependency score ranks the empirical TV influence.

Shapes: `b` states, `m` masked positions (padded; `valid` marks the real ones), `p` ordered pairs
(i, j), i ≠ j, both valid, pooled over states.

What it does: builds the training-free baseline scores of a batch of harvested states
(`baseline_scores`), flattens any `[b, m, m]` score to its pairs (`flatten_pairs`), and scores a
flat score against the TV target (`score_metrics`):
- `auroc`, `ap`: positives are pairs with TV ≥ `positive_threshold` (scikit-learn; None when the
  pairs hold only one class);
- `spearman`: rank correlation with the TV value over all pairs (scipy; None for a constant score);
- `precision_at_k`: per state, the share of the score's top-k pairs that are positives, averaged
  over the states with ≥ k pairs (`precision_at_k`; ties at the k-th place are counted by their
  expected share under a uniformly random tie break, so a score that ties many pairs — the
  distance baseline — is neither flattered nor punished by index order).
`reliability_bins` bins a predicted TV against the empirical TV (the head is trained to predict
TV, so its bins should lie on the diagonal).

Baselines (higher = more dependent, as for every score here):
- `attention`: captured attention symmetrised, max(A, Aᵀ);
- `distance`: −|pos_i − pos_j| (closer canvas positions = more dependent);
- `uncertainty`: (1 − conf_i)(1 − conf_j) — the direction we expect: committing a confident j
  changes little (the model already leans to x̂_j), and a confident i barely moves;
- `confidence_product`: conf_i · conf_j, the literal product, kept to show the direction.

What it does not do: load harvests or heads, run a model, print or plot (the command
`depmask.commands.eval_predictor` does).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from depmask.predictor import pair_mask

BASELINES = ("attention", "distance", "uncertainty", "confidence_product")


def baseline_scores(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The training-free scores `[b, m, m]` of a batch from `collate_states` (see the module
    docstring); entries off `valid × valid` are meaningless and dropped by `flatten_pairs`."""
    missing = [k for k in ("attention", "positions", "confidence") if k not in batch]
    if missing:
        raise ValueError(f"`batch` lacks key(s) {missing}; expected a batch from `collate_states`")
    att = batch["attention"].float()  # [b, m, m]
    pos = batch["positions"].float()  # [b, m]
    conf = batch["confidence"].float()  # [b, m]
    return {
        "attention": torch.maximum(att, att.transpose(1, 2)),
        "distance": -(pos[:, :, None] - pos[:, None, :]).abs(),
        "uncertainty": (1 - conf)[:, :, None] * (1 - conf)[:, None, :],
        "confidence_product": conf[:, :, None] * conf[:, None, :],
    }


def flatten_pairs(score: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """`[b, m, m]` score → float64 `[p]` over the valid off-diagonal pairs, in a fixed order
    (the same order for every score of the same batch)."""
    if score.dim() != 3 or tuple(score.shape) != (*valid.shape, valid.shape[1]):
        raise ValueError(f"`score` must be [b, m, m] = {[*valid.shape, valid.shape[1]]} like `valid`, "
                         f"got shape {tuple(score.shape)}")
    return score[pair_mask(valid.bool())].double().cpu().numpy()


def pair_states(state: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """The state index of each pair, `[p]` int64, in `flatten_pairs` order."""
    if state.shape != valid.shape[:1]:
        raise ValueError(f"`state` must be [b] = [{valid.shape[0]}], got shape {tuple(state.shape)}")
    return state[:, None, None].expand(*valid.shape, valid.shape[1])[pair_mask(valid.bool())].cpu().numpy()


def _check_flat(score: np.ndarray, tv: np.ndarray, state: np.ndarray | None = None) -> None:
    if score.ndim != 1 or score.shape != tv.shape:
        raise ValueError(f"`score` ({score.shape}) and `tv` ({tv.shape}) must be flat arrays of one length")
    if state is not None and state.shape != tv.shape:
        raise ValueError(f"`state` ({state.shape}) must have the shape of `tv` ({tv.shape})")
    if not np.isfinite(score).all():
        raise ValueError(f"`score` has {int((~np.isfinite(score)).sum())} non-finite value(s)")
    if not np.isfinite(tv).all():  # a NaN target counted as a negative, and hid Spearman for every score
        raise ValueError(f"`tv` has {int((~np.isfinite(tv)).sum())} non-finite value(s): the harvest holds "
                         "influences that are not numbers (non-finite logits in the harvesting forwards?)")


def precision_at_k(score: np.ndarray, positive: np.ndarray, state: np.ndarray, k: int) -> float | None:
    """Mean over states with ≥ k pairs of the share of the state's top-k pairs (by `score`) that
    are positive; ties at the k-th place count by their expected share. None if no state has
    ≥ k pairs."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` ({k!r}) must be an int >= 1")
    score, positive, state = np.asarray(score, float), np.asarray(positive, bool), np.asarray(state)
    _check_flat(score, positive.astype(float), state)
    order = np.argsort(state, kind="stable")
    bounds = np.flatnonzero(np.diff(state[order])) + 1
    shares = []
    for idx in np.split(order, bounds):
        if len(idx) < k:
            continue
        s, y = score[idx], positive[idx]
        kth = np.sort(s)[::-1][k - 1]  # the k-th largest score
        above, tied = s > kth, s == kth
        from_ties = (k - above.sum()) * y[tied].mean()
        shares.append((y[above].sum() + from_ties) / k)
    return float(np.mean(shares)) if shares else None


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def score_metrics(
    score: np.ndarray, tv: np.ndarray, state: np.ndarray, positive_threshold: float = 0.1, k: int = 5
) -> dict:
    """AUROC, AP, Spearman and precision@k of a flat `score` against the TV influence `tv`
    (`[p]` each, `state` `[p]` the state of each pair), plus `n_pairs`, `n_positive`, `n_states`.
    A metric that is undefined on these pairs (one class only, a constant input) is None."""
    if not 0 < positive_threshold <= 1:
        raise ValueError(f"`positive_threshold` ({positive_threshold}) must lie in (0, 1]")
    score, tv, state = np.asarray(score, float), np.asarray(tv, float), np.asarray(state)
    _check_flat(score, tv, state)
    positive = tv >= positive_threshold
    n_pos = int(positive.sum())
    two_classes = 0 < n_pos < len(tv)
    constant = len(tv) < 2 or np.ptp(score) == 0 or np.ptp(tv) == 0
    return {
        "auroc": float(roc_auc_score(positive, score)) if two_classes else None,
        "ap": float(average_precision_score(positive, score)) if two_classes else None,
        "spearman": None if constant else _finite_or_none(spearmanr(score, tv).statistic),
        "precision_at_k": precision_at_k(score, positive, state, k) if len(tv) else None,
        "n_pairs": int(len(tv)),
        "n_positive": n_pos,
        "n_states": int(len(np.unique(state))),
    }


def reliability_bins(pred: np.ndarray, tv: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width bins of `pred` over [0, 1]: per non-empty bin its edges, pair count, mean
    predicted and mean empirical TV (a calibrated predictor has `mean_pred ≈ mean_tv`)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` ({bins!r}) must be an int >= 1")
    pred, tv = np.asarray(pred, float), np.asarray(tv, float)
    _check_flat(pred, tv)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(pred, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()),
                        "mean_pred": float(pred[sel].mean()), "mean_tv": float(tv[sel].mean())})
    return out
