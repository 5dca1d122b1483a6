"""When a fit's end should not export: it trained nothing, or was a dry run.

`on_fit_end` of both Lightning modules exports to `export_dir`, which may hold a model or head the
user keeps (`mdlm fit`'s default is the shipped model's directory). A fit with no optimiser step
(`max_epochs 0`, fewer items than a batch) or Lightning's `fast_dev_run` (a one-batch check of the
code, which Lightning itself keeps from checkpointing and logging) must not replace it.
"""

from __future__ import annotations


def skip_export_reason(trainer) -> str | None:
    """Why the fit that just ended must not export, or None when it may."""
    if getattr(trainer, "fast_dev_run", False):
        return "a fast_dev_run checks the code; it exports nothing"
    if int(trainer.global_step) == 0:
        return "the fit took no optimiser step (no training batch, or max_epochs 0)"
    return None
