"""`StepState`: everything a policy may look at when it chooses what to commit in one step.

Shapes: `b` batch (live rows of this forward), `l` canvas length, `d` hidden size.

The loop builds one `StepState` per forward; a policy reads it and returns a commit mask. The
state never holds the model or the vocabulary-sized logits: policies decide from per-position
summaries (candidate, confidence, entropy, margin) and, only when they ask, hidden states and
attention. Values outside `mask` are undefined (zero) and must not be read. A policy that measures
dependencies empirically (the oracle) sets `needs_probe`: it then also gets the block's
log-probabilities and a `probe` that runs extra forwards, which the loop counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Probe = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`probe(tokens [n, l], rows [n]) -> logits [n, l, v]`: extra forwards of perturbed copies of
state rows `rows`; the loop counts each copy as one forward of that row (NFE and `probe_nfe`)."""


@dataclass
class StepState:
    tokens: torch.Tensor  # [b, l] long: the canvas before this step's commits
    mask: torch.Tensor  # [b, l] bool: masked positions of the current block (the selectable ones)
    x0: torch.Tensor  # [b, l] long: candidate token per position (argmax, or Gumbel-max sample)
    confidence: torch.Tensor  # [b, l] float64: p(x0) under the untempered softmax
    entropy: torch.Tensor  # [b, l] float64: entropy of the untempered softmax, in nats
    margin: torch.Tensor  # [b, l] float64: p(top-1) − p(top-2)
    step: int  # 0-based step index inside the current block
    steps_per_block: int  # the step budget of a block (LLaDA's `steps // num_blocks`)
    block: int  # 0-based index of the current block
    block_start: int  # canvas index of the first position of the block (same for every row)
    block_end: int  # canvas index one past the block
    block_masked: torch.Tensor  # [b] long: masked positions in the block when the block began
    hidden: torch.Tensor | None = None  # [b, l, d] final hidden states, when the policy asks
    attention: torch.Tensor | None = None  # [b, l, l] captured attention, when the policy asks
    generator: torch.Generator | None = None  # the loop's RNG, for stochastic policies
    block_log_probs: torch.Tensor | None = None  # [b, c, v] log-softmax of the block, when probing
    rows: torch.Tensor | None = None  # [b] long: each state row's index in the decoded batch
    keys: torch.Tensor | None = None  # [b] long: canvas positions the row's forward attends over
    # (its length without left padding; the loop sets it; None: the whole canvas)
    probe: Probe | None = None  # extra counted forwards, only for policies with `needs_probe`
    raw_confidence: torch.Tensor | None = None  # [b, l] float64: the confidence before the loop's
    # `confidence_eos_eot_inf` zeroed EOS candidates' (a ranking rule): what a learned scorer reads
    # as a feature, as it was trained on. Left unset, it is `confidence`.

    def __post_init__(self) -> None:
        if self.raw_confidence is None:
            self.raw_confidence = self.confidence

    @property
    def num_masked(self) -> torch.Tensor:
        """[b] long: masked positions left in the block."""
        return self.mask.sum(dim=1)

    def masked_confidence(self) -> torch.Tensor:
        """[b, l] confidence with −inf wherever a position cannot be selected."""
        return self.confidence.masked_fill(~self.mask, float("-inf"))
