"""`depmask mdlm fit|validate ...`: LightningCLI over the tiny MDLM's module and data.

Every argument is overridable from the command line, `--print_config` works, and the resolved
config is saved in the run directory (`config.yaml` next to the checkpoints). The default logger is
wandb, offline unless the user sets `WANDB_MODE` or has an API key; `--trainer.logger false` turns
logging off and `--trainer.logger CSVLogger` writes CSV. Lightning lives only in `depmask.train`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from depmask.train.mdlm_data import TaskMixtureDataModule
from depmask.train.mdlm_module import MDLMModule


class DepmaskCLI(LightningCLI):
    """LightningCLI that parses the `args` `depmask` hands it without warning that `sys.argv`
    holds them too (it does: `depmask train fit ...`). `sys.argv` itself is left alone, since
    Lightning's DDP launcher re-runs it in the child processes."""

    # model arguments a resumed run may change: where it writes its result, not what it trains
    RESUME_MAY_CHANGE: tuple[str, ...] = ("export_dir",)
    # data arguments it may change: how batches are loaded, not which
    RESUME_DATA_MAY_CHANGE: tuple[str, ...] = ("num_workers",)
    # model arguments a `validate` may change besides those: what it measures, not the weights (its
    # data may be other data altogether)
    VALIDATE_MAY_CHANGE: tuple[str, ...] = ("val_decode_items",)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """`fit` and `validate` only: the modules define no `test_step` / `predict_step`, and
        `depmask train test` offered them and crashed in Lightning."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "validate")}

    def parse_arguments(self, parser, args) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """With `--ckpt_path`, LightningCLI replaces the `model` arguments by the checkpoint's
        hyperparameters, so a `--model.*` flag of the resuming command was silently ignored
        (`--model.export_dir elsewhere` exported over the first run's head). Now a model argument
        that differs from the checkpoint's is refused, naming both values — resume with the
        run's own settings, or start a new run — except those in `RESUME_MAY_CHANGE`, where the
        command wins."""
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if sub == "validate" and not ckpt:
            raise ValueError("`validate` needs `--ckpt_path`, the checkpoint of a fit: without one it would "
                             "validate freshly initialised weights")
        if not ckpt:
            return
        # `~` expanded for everything that reads the path (LightningCLI's own check did not, so a
        # `~/run/last.ckpt` skipped every comparison below and Lightning still resumed from it)
        path, saved = _check_checkpoint(ckpt, self.model_class)
        ckpt = self.config[sub]["ckpt_path"] = str(path)
        mine = self.config[sub].get("model")
        mine = mine.clone() if mine is not None else None
        super()._parse_ckpt_path()
        if mine is None:
            return
        theirs = self.config[sub]["model"]
        diff = {key: (theirs.get(key), value) for key, value in mine.items()
                if key in theirs and not _same(theirs.get(key), value)}
        may_change = self.RESUME_MAY_CHANGE + (self.VALIDATE_MAY_CHANGE if sub == "validate" else ())
        for key in may_change:  # the command's value, `null` included
            if key in diff:
                self.config[sub]["model"][key] = diff.pop(key)[1]
        diff = {f"model.{k}": v for k, v in diff.items()}
        if sub == "fit" and saved is not None:
            diff.update(self._data_diff(sub, saved))
        if diff:
            settings = "; ".join(f"{k} is {a!r} in the checkpoint, {b!r} here" for k, (a, b) in sorted(diff.items()))
            if sub == "validate":
                raise ValueError(f"`ckpt_path` ({ckpt}) holds weights trained with other model settings than this "
                                 f"command's: {settings}. Give the run's own (its config.yaml); of the model's, "
                                 f"only {', '.join(may_change)} may differ for a validation")
            raise ValueError(f"`ckpt_path` ({ckpt}) resumes a run trained with other settings than this command's: "
                             f"{settings}. Resume with the run's own settings (its config.yaml), or drop "
                             "--ckpt_path to start a new run")

    def _data_diff(self, sub: str, saved: dict) -> dict:
        """The `data` arguments of this command that differ from those the checkpoint (`saved`)'s
        data module recorded (a resume with another harvest or split trained on, and exported from,
        data that was not the run's). Checkpoints written before the data modules recorded them: none."""
        data = self.config[sub].get("data")
        if data is None:
            return {}
        theirs = saved.get("datamodule_hyper_parameters") or {}
        return {f"data.{k}": (theirs[k], v) for k, v in data.items()
                if k in theirs and k not in self.RESUME_DATA_MAY_CHANGE and not _same(theirs[k], v)}


class HandConfigToModule(SaveConfigCallback):
    """Save the resolved config as LightningCLI does, and hand it to the module
    (`train_config_text`), which writes it beside the weights it exports (`train_config.yaml`)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        pl_module.train_config_text = self.parser.dump(self.config, skip_none=False)


def wandb_offline_by_default() -> None:
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"


def default_logger(save_dir: str = "runs", project: str = "depmask", name: str | None = None) -> dict:
    return {"class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"save_dir": save_dir, "project": project, "name": name}}


def mdlm_cli(args: Sequence[str] | None = None) -> LightningCLI:
    wandb_offline_by_default()
    return DepmaskCLI(
        MDLMModule,
        TaskMixtureDataModule,
        args=list(args) if args is not None else None,
        trainer_defaults={"logger": default_logger(name="tiny-mdlm"), "default_root_dir": "runs/mdlm"},
        save_config_callback=HandConfigToModule,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "depmask mdlm"},  # its errors' tip: `depmask mdlm fit --help`
        seed_everything_default=0,
    )


def _same(a, b) -> bool:
    """Config values compared as plain data: a tuple from a checkpoint equals a list, NaN equals NaN."""
    a, b = (list(v) if isinstance(v, tuple) else v for v in (a, b))
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


def _check_checkpoint(ckpt, model_class=None) -> tuple[Path, dict | None]:
    """`ckpt` with `~` expanded, and its contents (None when there is no such file); refused
    (ValueError naming `ckpt_path`) when it is not a Lightning
    checkpoint file — a directory (a model's or a run's) or another kind of file failed inside
    Lightning or torch.load — or is one of another kind of model than `model_class` (a head's
    given to `mdlm fit` failed in jsonargparse on settings it does not know)."""
    import inspect

    import torch

    path = Path(str(ckpt)).expanduser()
    if path.is_dir():
        raise ValueError(f"`ckpt_path` ({ckpt}) is a directory; give a checkpoint file of a fit "
                         "(`<run>/checkpoints/last.ckpt`)")
    if not path.is_file():
        return path, None  # Lightning names a missing one
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle, zip or safetensors error: not a checkpoint torch can read safely
        raise ValueError(f"`ckpt_path` ({ckpt}) is not a Lightning checkpoint ({type(e).__name__}); give the "
                         "`.ckpt` file of a fit (`<run>/checkpoints/last.ckpt`)") from None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"`ckpt_path` ({ckpt}) is not a Lightning checkpoint (no `state_dict`); give the "
                         "`.ckpt` file of a fit (`<run>/checkpoints/last.ckpt`)")
    if model_class is not None and isinstance(saved.get("hyper_parameters"), dict):
        foreign = ({k for k in saved["hyper_parameters"] if not k.startswith("_")}  # Lightning's `_instantiator`
                   - set(inspect.signature(model_class.__init__).parameters))
        if foreign:
            raise ValueError(f"`ckpt_path` ({ckpt}) is a checkpoint of another kind of model: its settings "
                             f"{sorted(foreign)[:4]} are not {model_class.__name__}'s (a dependency head's "
                             "checkpoint goes to `depmask train`, an MDLM's to `depmask mdlm`)")
    return path, saved
