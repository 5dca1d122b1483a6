"""The MDLM-training CLI run the train tests share: the shipped config, small settings, a tiny module."""

import lightning as L

from depmask.cli import main
from depmask.train import MDLMModule, TaskMixtureDataModule
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "mdlm" / "tiny-tasks.yaml"


SMALL = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--data.pool_size", "40", "--data.items_per_epoch", "64", "--data.batch_size", "8",
         "--data.val_size", "8", "--model.val_decode_items", "2", "--trainer.val_check_interval", "2",
         "--model.hidden_size", "32", "--model.intermediate_size", "64"]


def _tiny_module(dm: TaskMixtureDataModule) -> MDLMModule:
    """A width-16 MDLM for `dm`'s tokenizer (after `dm.setup()`)."""
    dm.setup()
    tok = dm.tokenizer
    return MDLMModule(hidden_size=16, intermediate_size=32, num_attention_heads=2, export_dir=None,
                      vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)


class _BatchLog(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((trainer.current_epoch, batch_idx, batch["input_ids"].clone()))


MDLM_FIT = ["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "2"]


def _a_fit(tmp_path):
    """A two-step MDLM fit; its checkpoint."""
    main([*MDLM_FIT, "--model.export_dir", "null", "--trainer.default_root_dir", str(tmp_path / "run"),
          "--trainer.logger", "false"])
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("*.ckpt")
    return ckpt
