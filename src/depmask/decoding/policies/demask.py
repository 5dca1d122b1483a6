"""DEMASK, dependency-guided unmasking (arXiv 2604.02560), as a preset of the shared selector:
token units, the budget rule, the learned head scorer.

A trained `DependencyHead` predicts, from this forward's final hidden states, the pairwise
influence `D[i, j]` between the masked positions of the block; positions are visited in
confidence order and join while the summed influence over ordered pairs of the chosen set stays
≤ ε (the most confident always commits; positions below the confidence floor never do). Under
sub-additivity, a sum of *expected* influences (over x_j ~ p_j, DEMASK's D) bounds the TV distance
between committing the set in parallel and the model's sequential joint; the head is trained on
the influence at the committed value x̂_j (the harvest's `topk: 1`, the default; `topk: k`
averages over the top k values), close to it on the embedded model (mean 0.050 against 0.054 at
k = 3), and with `tv_weight` > 0 it over-predicts (`train/head_module.py`), so ε is a knob to
sweep, not a TV bound. The head comes from `head=DIR` (`--policy.head DIR`); one trained for
another model is refused when decoding starts (`bind`).
"""

from __future__ import annotations

from depmask.decoding.policies.guided import Guided, GuidedPreset, check_fraction


class Demask(GuidedPreset):
    name = "demask"
    _forwarded = {"epsilon": "epsilon", "confidence_floor": "threshold"}

    def __init__(self, head: str | None = None, epsilon: float = 0.1, confidence_floor: float = 0.0):
        check_fraction("confidence_floor", confidence_floor)
        self._guided = Guided(units="token", rule="budget", scorer="head", head=head, epsilon=epsilon,
                              threshold=confidence_floor)
        self.head = self._guided.head
        self.epsilon, self.confidence_floor = epsilon, confidence_floor
