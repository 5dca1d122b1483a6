"""Train a dependency head from Python (what `depmask train fit` does, without the CLI).

Used by the quickstart: same module, same data module, same checkpointing on `val/auroc` and the
same export; no logger unless one is passed. Returns the exported head's directory and the
validation metrics of the checkpoint it exports (not of the last epoch). `module_kwargs` reads the `model:` section of a `depmask train fit` config
(`configs/train/head-tiny.yaml`), so the quickstart trains the architecture that config ships.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from depmask.train.head_data import HeadDataModule
from depmask.train.head_module import HeadModule

# HeadModule arguments a config's `model:` section may not set here: linked from the data, or the
# export directory, which the caller chooses
LINKED = ("hidden_size", "base_fingerprint", "training_manifest", "export_dir")


def module_kwargs(config: str | Path) -> dict[str, Any]:
    """The `model:` section of a `depmask train fit` YAML as `HeadModule` arguments (without the
    linked ones and `export_dir`). Raises ValueError on a missing section or an unknown key."""
    path = Path(config)
    if not path.is_file():
        raise ValueError(f"head config {str(path)!r} is not a file; expected a `depmask train fit` YAML "
                         "such as configs/train/head-tiny.yaml")
    section = (yaml.safe_load(path.read_text()) or {}).get("model")
    if not isinstance(section, dict):
        raise ValueError(f"head config {str(path)!r} has no `model:` mapping (the HeadModule arguments)")
    known = set(inspect.signature(HeadModule.__init__).parameters) - {"self"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"head config {str(path)!r}: unknown `model` keys {unknown}; expected some of "
                         f"{sorted(known - set(LINKED))}")
    return {k: v for k, v in section.items() if k not in LINKED}


def train_head(harvest: str | Path, export_dir: str | Path, *, epochs: int = 3, batch_size: int = 64,
               val_fraction: float = 0.1, seed: int = 0, run_dir: str | Path | None = None, logger=False,
               progress: bool = True, **module: Any) -> tuple[Path, dict]:
    """Fit a head on `harvest` and export the best checkpoint to `export_dir`. `module`: HeadModule
    arguments (architecture, loss, optimiser; `module_kwargs(config)` reads them from a YAML);
    unset ones keep this function's defaults, width 128 with 2 layers and lr 2e-3."""
    linked = sorted(set(module) & set(LINKED))
    if linked:
        raise ValueError(f"train_head: {linked} are set from the harvest and `export_dir`, not passed")
    L.seed_everything(seed, verbose=False)
    data = HeadDataModule(str(harvest), val_fraction=val_fraction, batch_size=batch_size)
    kwargs = {"dim": 128, "layers": 2, "lr": 2e-3, **module}
    head = HeadModule(hidden_size=data.hidden_size, base_fingerprint=data.fingerprint,
                      export_dir=str(export_dir), training_manifest=data.manifest, **kwargs)
    run_dir = Path(run_dir or Path(export_dir).parent / "head-run")
    ckpt = ModelCheckpoint(dirpath=run_dir, monitor="val/auroc", mode="max", filename="head-{step}")
    trainer = L.Trainer(max_epochs=epochs, logger=logger, callbacks=[ckpt], enable_progress_bar=progress,
                        enable_model_summary=False, log_every_n_steps=20, gradient_clip_val=1.0,
                        num_sanity_val_steps=0, accelerator="auto", devices=1)
    trainer.fit(head, datamodule=data)
    if head.exported_path is None:  # the fit exported nothing (its last lines say why)
        raise ValueError(f"train_head: no head was exported to {export_dir} (the fit trained nothing or "
                         "diverged; its last lines say why)")
    return Path(export_dir), dict(head.exported_metrics)
