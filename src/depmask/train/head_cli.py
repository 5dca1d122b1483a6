"""`depmask train fit|validate --config configs/train/head-tiny.yaml`: LightningCLI for the head.

Every argument is overridable from the command line and `--print_config` works. Each run gets its
own directory, `runs/head/<time>-<pid>/` (two runs started in the same second do not share it),
holding the resolved `config.yaml` and the checkpoints (`--checkpoint.*`, monitored on `val/auroc`
unless the config says otherwise); early stopping is `--early_stopping.*`. The harvest's
hidden size, model fingerprint and data manifest are linked into the module from the data module,
so the exported head (`--model.export_dir`) knows which base model it belongs to. The default
logger is wandb, offline unless `WANDB_MODE` or an API key says otherwise; `--trainer.logger false`
or `--trainer.logger CSVLogger` work too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from depmask.train.cli import DepmaskCLI, default_logger, wandb_offline_by_default
from depmask.train.head_data import HeadDataModule
from depmask.train.head_module import HeadModule


class SaveConfigToRunDir(SaveConfigCallback):
    """Save the resolved config next to the checkpoints (and into the exported head's folder)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        targets = []
        if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
            targets.append(Path(trainer.checkpoint_callback.dirpath) / "config.yaml")
        if getattr(pl_module.hparams, "export_dir", None):
            targets.append(Path(pl_module.hparams.export_dir) / "train_config.yaml")
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)


class HeadCLI(DepmaskCLI):
    def add_arguments_to_parser(self, parser) -> None:
        run_dir = f"runs/head/{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/auroc", "checkpoint.mode": "max",
                             "checkpoint.dirpath": run_dir, "checkpoint.filename": "head-{step}",
                             "checkpoint.save_last": True})
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/auroc", "early_stopping.mode": "max",
                             "early_stopping.patience": 5, "early_stopping.check_on_train_epoch_end": False})
        parser.link_arguments("data.hidden_size", "model.hidden_size", apply_on="instantiate")
        parser.link_arguments("data.fingerprint", "model.base_fingerprint", apply_on="instantiate")
        parser.link_arguments("data.manifest", "model.training_manifest", apply_on="instantiate")


def head_cli(args: Sequence[str] | None = None) -> LightningCLI:
    wandb_offline_by_default()
    return HeadCLI(
        HeadModule,
        HeadDataModule,
        args=list(args) if args is not None else None,
        trainer_defaults={"logger": default_logger(name="dependency-head"), "default_root_dir": "runs/head"},
        save_config_callback=SaveConfigToRunDir,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        seed_everything_default=0,
    )
