"""The oracle: the budget rule of DEMASK with the exact empirical influence at this step instead
of a predictor (token units, the budget rule, the oracle scorer) — the headroom any learned head
could reach. Its extra forwards (one perturbed copy per candidate per step, batched
`chunk_size` per forward, fewer when their logits would pass `memory_budget_mb`) are counted in NFE and reported alone as `probe_nfe`.
"""

from __future__ import annotations

from depmask.decoding.policies.guided import Guided, GuidedPreset, check_fraction


class Oracle(GuidedPreset):
    name = "oracle"
    _forwarded = {"epsilon": "epsilon", "confidence_floor": "threshold"}

    def __init__(self, epsilon: float = 0.1, confidence_floor: float = 0.0, chunk_size: int = 64,
                 memory_budget_mb: int = 8192):
        check_fraction("confidence_floor", confidence_floor)
        self._guided = Guided(units="token", rule="budget", scorer="oracle", epsilon=epsilon,
                              threshold=confidence_floor, chunk_size=chunk_size, memory_budget_mb=memory_budget_mb)
        self.epsilon, self.confidence_floor, self.chunk_size = epsilon, confidence_floor, chunk_size
        self.memory_budget_mb = memory_budget_mb
