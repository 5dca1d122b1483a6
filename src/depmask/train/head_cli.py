"""`depmask train fit|validate --config configs/train/head-tiny.yaml`: LightningCLI for the head.

Every argument is overridable from the command line and `--print_config` works. Each run gets its
own directory, `runs/head/<time>-<pid>/` (two runs started in the same second do not share it),
holding the resolved `config.yaml` and the checkpoints (`--checkpoint.*`, monitored on `val/auroc`
unless the config says otherwise); early stopping is `--early_stopping.*`. The harvest's
hidden size, model fingerprint and data manifest are linked into the module from the data module,
so the exported head (`--model.export_dir`) knows which base model it belongs to. `last.ckpt` is
rewritten every epoch (`RunCheckpoint`), and a run resumed from it (`--ckpt_path`) keeps its
checkpoints in that run's directory, so the best of all its epochs is exported. The default
logger is wandb, offline unless `WANDB_MODE` or an API key says otherwise; `--trainer.logger false`
or `--trainer.logger CSVLogger` work too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from depmask.train.cli import (
    DepmaskCLI,
    HandConfigToModule,
    default_logger,
    wandb_offline_by_default,
)
from depmask.train.head_data import HeadDataModule
from depmask.train.head_module import HeadModule


class SaveConfigToRunDir(HandConfigToModule):
    """Save the resolved config next to the checkpoints when a run starts, and hand it to the module,
    which writes it into the exported head's folder with the weights (`train_config.yaml`): written
    at the start, a killed or `validate` run left a config that did not describe the head beside it."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        # the fit's: a `validate --ckpt_path` of the run replaced it with its own settings, which
        # `train fit --config` refuses (`verbose`), and the refusals point users at this file
        if stage == "fit" and trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
            path = Path(trainer.checkpoint_callback.dirpath) / "config.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)
        super().save_config(trainer, pl_module, stage)


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose `last.ckpt` follows every epoch. Lightning 2.6 rewrites it only in a
    step that also saved a top-k checkpoint, i.e. when the monitored metric improved, so a run
    resumed from `last.ckpt` restarted from its last *improving* epoch and trained the epochs after
    it again (with the early-stopping counter and schedule of that older point). Also in epochs
    without validation (`check_val_every_n_epoch` > 1), which Lightning's epoch-end hook skips."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer)  # a step already saved (after this epoch's validation) is skipped

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def load_state_dict(self, state_dict: dict) -> None:
        """A run directory that was moved (or copied) and resumed from there: its checkpoints are
        found under the new directory. Lightning forgot them when `dirpath` differed, so `last.ckpt`
        stayed behind (the resumed epochs went to `last-v1.ckpt`, and a second resume repeated them)
        and the epochs before the move no longer competed for the exported best."""
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            moved = _rebased(state_dict, Path(old), Path(self.dirpath))
            if moved is not None:
                state_dict = moved
        super().load_state_dict(state_dict)

    def _refresh_last(self, trainer) -> None:
        # skipped where the parent saved in this step already (its `last.ckpt` too), in sanity
        # checks and in fast_dev_run
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _rebased(state: dict, old: Path, new: Path) -> dict | None:
    """`ModelCheckpoint` state with its paths under `old` moved to `new`, dropping files not found
    there; None when none of them is there (a new directory, not the same run moved)."""
    def move(path):
        if not path or Path(path).parent != old:
            return path
        there = new / Path(path).name
        return str(there) if there.is_file() else ""

    best_k = {move(k): v for k, v in (state.get("best_k_models") or {}).items()}
    best_k = {k: v for k, v in best_k.items() if k}
    paths = {k: move(state.get(k)) for k in ("best_model_path", "kth_best_model_path", "last_model_path")}
    if not best_k and not any(paths.values()):
        return None
    return {**state, **paths, "best_k_models": best_k, "dirpath": str(new)}


class HeadCLI(DepmaskCLI):
    VALIDATE_MAY_CHANGE = ("positive_threshold", "precision_k")  # what `val/*` counts, not the weights

    def add_arguments_to_parser(self, parser) -> None:
        # one name per CLI: the parser of every subcommand (fit, validate, ...) is built here, and
        # a second boundary between two of them must not give them different defaults
        if not hasattr(self, "_default_run_dir"):
            self._default_run_dir = f"runs/head/{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        run_dir = self._default_run_dir
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/auroc", "checkpoint.mode": "max",
                             "checkpoint.dirpath": run_dir, "checkpoint.filename": "head-{step}",
                             "checkpoint.save_last": True})
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/auroc", "early_stopping.mode": "max",
                             "early_stopping.patience": 5, "early_stopping.check_on_train_epoch_end": False})
        parser.link_arguments("data.hidden_size", "model.hidden_size", apply_on="instantiate")
        parser.link_arguments("data.fingerprint", "model.base_fingerprint", apply_on="instantiate")
        parser.link_arguments("data.manifest", "model.training_manifest", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """A resumed run (`--ckpt_path`) keeps its checkpoints in the directory it resumes from
        unless `--checkpoint.dirpath` says otherwise: in a new directory Lightning forgets the
        best checkpoint so far, and the exported head was the best of the resumed epochs only.
        A new fit is refused a directory that holds checkpoints."""
        cfg = self.config.get(self.subcommand) if self.subcommand else None
        if cfg is None or cfg.get("checkpoint") is None:
            return
        if not cfg.get("ckpt_path"):
            # a printed or saved config holds its run's directory: a second fit from it wrote its
            # checkpoints beside the first run's (`-v1` names) and overwrote its config.yaml
            dirpath = cfg["checkpoint"].get("dirpath")
            if self.subcommand == "fit" and dirpath and any(Path(dirpath).glob("*.ckpt")):
                raise ValueError(
                    f"`checkpoint.dirpath` ({dirpath}) holds another run's checkpoints (a config printed or saved "
                    f"by that run names its directory). Resume it with `--ckpt_path {Path(dirpath) / 'last.ckpt'}`, "
                    "or start a new run in another `--checkpoint.dirpath` (left out, each run gets a new one)")
            return
        if cfg["checkpoint"].get("dirpath") == self._default_run_dir:
            cfg["checkpoint"]["dirpath"] = str(Path(cfg["ckpt_path"]).parent)


def head_cli(args: Sequence[str] | None = None) -> LightningCLI:
    wandb_offline_by_default()
    return HeadCLI(
        HeadModule,
        HeadDataModule,
        args=list(args) if args is not None else None,
        trainer_defaults={"logger": default_logger(name="dependency-head"), "default_root_dir": "runs/head"},
        save_config_callback=SaveConfigToRunDir,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        parser_kwargs={"prog": "depmask train"},  # its errors' tip: `depmask train fit --help`
        seed_everything_default=0,
    )
