"""The forwards a piece of work makes, logged and replayed bare: the denominator of the overhead
benchmarks (`decode_overhead.py`, `harvest_throughput.py`), which divide a job's time by the time
of exactly the forwards it made — same shapes, same hidden-state and attention requests."""

from __future__ import annotations

import time

import torch


class LoggedDenoiser:
    """Forwards to a denoiser and logs every call's input shape and flags (`calls`)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, tokens, attention_mask=None, need_hidden=False, need_attention=False):
        self.calls.append((tuple(tokens.shape), attention_mask is not None, need_hidden, need_attention))
        return self.inner(tokens, attention_mask, need_hidden=need_hidden, need_attention=need_attention)


@torch.inference_mode()
def replay(den, calls, vocab: int) -> float:
    """Seconds to run the logged `calls` through `den` on random token ids below `vocab`, inputs
    built beforehand: the forwards alone."""
    g = torch.Generator().manual_seed(0)
    inputs = [(torch.randint(0, vocab, shape, generator=g).to(den.device),
               torch.ones(shape, dtype=torch.bool, device=den.device) if masked else None, h, a)
              for shape, masked, h, a in calls]
    if den.device.type == "cuda":  # the inputs' copies and fills done before the clock starts
        torch.cuda.synchronize()
    start = time.perf_counter()
    for tokens, am, h, a in inputs:
        den(tokens, am, need_hidden=h, need_attention=a)
    if den.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
