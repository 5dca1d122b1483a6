"""CLAD, Cluster-Level Attention-Guided Decoding (Qi et al., arXiv 2605.29607), as a preset of the
shared selector: cluster units, the conflict rule, the attention scorer.

Per step: candidates are the masked positions of the block with confidence ≥ τ plus the most
confident one; confidence-induced clusters (CICs) are their maximal runs of consecutive indices;
the captured attention is symmetrised, `max(A, Aᵀ)` with a zero diagonal; the affinity of
clusters a, b is the max over rows of a of the mean over columns of b, symmetrised by max; a
conflict edge joins a and b when each is the other's top-1 and the affinity is at least both row
means (with ≤ 2 clusters: at least 1.2 / L, L the attended keys); the maximum-weight independent
set of that matching (weight = cluster size) keeps the larger cluster of each pair — ties to the
more confident — and every cluster without an edge. Everything it keeps is committed. (The
row-mean test passes every mutual top-1 pair, so with 3 or more clusters one cluster of the
most-attending pair is always dropped: `selector.py`.)
"""

from __future__ import annotations

from depmask.decoding.policies.guided import Guided, GuidedPreset, check_fraction


class Clad(GuidedPreset):
    name = "clad"
    _forwarded = {"threshold": "threshold"}

    def __init__(self, threshold: float = 0.7):
        check_fraction("threshold", threshold)
        self.threshold = threshold
        self._guided = Guided(units="cluster", rule="conflict", scorer="attention", threshold=threshold)
