"""What the two Lightning modules' fits share around their export: whether a fit's end may export
(it trained nothing, was a dry run, or diverged), how long its learning-rate schedule runs (and its rate
after a resume), and the resolved config written beside the exported weights.

`on_fit_end` of both Lightning modules exports to `export_dir`, which may hold a model or head the
user keeps (`mdlm fit`'s default is the shipped model's directory). A fit with no optimiser step
(`max_epochs 0`, fewer items than a batch), Lightning's `fast_dev_run` (a one-batch check of the
code, which Lightning itself keeps from checkpointing and logging) or a fit whose weights diverged
to NaN or infinity must not replace it.
"""

from __future__ import annotations

import math
from pathlib import Path

TRAIN_CONFIG = "train_config.yaml"  # the CLI's resolved config, beside the weights it made


def skip_export_reason(trainer) -> str | None:
    """Why the fit that just ended must not export, or None when it may."""
    if getattr(trainer, "fast_dev_run", False):
        return "a fast_dev_run checks the code; it exports nothing"
    if int(trainer.global_step) == 0:
        return "the fit took no optimiser step (no training batch, or max_epochs 0)"
    return None


def nonfinite_reason(module) -> str | None:
    """Why weights with a NaN or an infinity (a diverged fit) must not be exported, or None."""
    import torch

    bad = [name for name, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        return (f"{len(bad)} of its tensors hold NaN or infinite values (e.g. {bad[0]}): the fit diverged; "
                "lower the learning rate")
    return None


def resume_schedule(trainer) -> None:
    """Set each optimiser group's rate to the rebuilt schedule's value at the restored step.

    A resumed fit rebuilds its `LambdaLR` over its own length (`total_steps`), then Lightning
    restores the optimiser's saved rate: the old schedule's value at the checkpoint. A resume with
    a larger `max_epochs` ran its first step at that value (0.1 × lr at the end of the old
    cosine) and only then followed the new schedule. A fresh or same-length fit is unchanged."""
    import torch

    for config in trainer.lr_scheduler_configs:
        sched = config.scheduler
        if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
            for group, base, fn in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base * fn(sched.last_epoch)


def total_steps(trainer) -> int:
    """The optimiser steps of the whole fit, which the warm-up + cosine schedules span; refused
    when the fit is endless (`max_epochs -1` with no `max_steps`: an OverflowError before)."""
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ValueError("the learning-rate schedule decays over the whole fit: bound it with "
                         "`--trainer.max_steps` or `--trainer.max_epochs` (both are -1, endless, here; "
                         "early stopping may still end it sooner)")
    return max(int(total), 1)


def write_train_config(module, directory: str | Path) -> None:
    """Write the CLI's resolved config (`module.train_config_text`, handed over by the CLI's
    config callback; absent when the module was built in Python) beside the exported weights."""
    from depmask.data_gen.shards import write_atomic

    text = getattr(module, "train_config_text", None)
    if text:
        write_atomic(Path(directory) / TRAIN_CONFIG, text.encode())


def log_artifact(loggers, path: Path, name: str) -> None:
    """Log the exported directory `path` as a wandb model artifact `name`, when a logger is wandb."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            artifact = wandb.Artifact(name, type="model")
            artifact.add_dir(str(path))
            logger.experiment.log_artifact(artifact)
