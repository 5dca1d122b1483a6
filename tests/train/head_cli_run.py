"""The head-training CLI run the train tests share: the shipped config, fast settings, one fit."""

from depmask.cli import main
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "train" / "head-tiny.yaml"


FAST = ["--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1", "--model.dim", "32", "--model.layers", "1",
        "--data.batch_size", "16", "--data.val_fraction", "0.3"]


def fit(harvest, tmp_path, *extra):
    main(["train", "fit", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest),
          "--model.export_dir", str(tmp_path / "head"), "--checkpoint.dirpath", str(tmp_path / "run"), *extra])
