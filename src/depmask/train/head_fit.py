"""Train a dependency head from Python (what `depmask train fit` does, without the CLI).

Used by the quickstart: same module, same data module, same checkpointing on `val/auroc` and the
same export; no logger unless one is passed. Returns the exported head's directory and its final
validation metrics.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from depmask.train.head_data import HeadDataModule
from depmask.train.head_module import HeadModule


def train_head(harvest: str | Path, export_dir: str | Path, *, epochs: int = 3, batch_size: int = 64,
               val_fraction: float = 0.1, dim: int = 128, layers: int = 2, lr: float = 2e-3, seed: int = 0,
               run_dir: str | Path | None = None, logger=False, progress: bool = True) -> tuple[Path, dict]:
    """Fit a head on `harvest` and export the best checkpoint to `export_dir`."""
    L.seed_everything(seed, verbose=False)
    data = HeadDataModule(str(harvest), val_fraction=val_fraction, batch_size=batch_size)
    module = HeadModule(hidden_size=data.hidden_size, base_fingerprint=data.fingerprint, dim=dim, layers=layers,
                        lr=lr, export_dir=str(export_dir), training_manifest=data.manifest)
    run_dir = Path(run_dir or Path(export_dir).parent / "head-run")
    ckpt = ModelCheckpoint(dirpath=run_dir, monitor="val/auroc", mode="max", filename="head-{step}")
    trainer = L.Trainer(max_epochs=epochs, logger=logger, callbacks=[ckpt], enable_progress_bar=progress,
                        enable_model_summary=False, log_every_n_steps=20, gradient_clip_val=1.0,
                        num_sanity_val_steps=0, accelerator="auto", devices=1)
    trainer.fit(module, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return Path(export_dir), metrics
