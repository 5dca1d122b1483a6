"""What the two fits (`mdlm fit`, `train fit`) refuse, and what they will not export: resumes from
paths that are no checkpoint, `validate` without one, non-finite settings or weights, and the
MDLM train loader's resume at an epoch's end and under a distributed sampler."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DistributedSampler

from depmask.cli import main
from depmask.train import MDLMModule, TaskMixtureDataModule, collate
from depmask.train.head_module import HeadModule
from depmask.train.mdlm_data import _TrainLoader
from depmask.train.mdlm_module import check_model_export_dir
from tests.conftest import EMBEDDED
from tests.train.test_mdlm_training import CONFIG, SMALL, _BatchLog, _tiny_module

MDLM_FIT = ["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "2"]


def test_validate_without_a_checkpoint_is_refused(tmp_path):
    """It validated freshly initialised weights and printed their table (every accuracy 0)."""
    with pytest.raises(ValueError, match=r"`validate` needs `--ckpt_path`.*freshly initialised weights"):
        main(["mdlm", "validate", "--config", str(CONFIG), *SMALL, "--model.export_dir", "null",
              "--trainer.default_root_dir", str(tmp_path / "runs")])


def test_a_checkpoint_path_that_is_no_checkpoint_is_named(tmp_path):
    """A directory failed inside Lightning with IsADirectoryError; the shipped model's weights or a
    damaged file with a torch unpickling traceback."""
    run = [*MDLM_FIT, "--model.export_dir", str(tmp_path / "m"), "--trainer.default_root_dir", str(tmp_path / "r")]
    with pytest.raises(ValueError, match=r"`ckpt_path` \(.*tiny-tasks\) is a directory; give a checkpoint file"):
        main([*run, "--ckpt_path", str(EMBEDDED)])
    with pytest.raises(ValueError, match=r"`ckpt_path` \(.*model.safetensors\) is not a Lightning checkpoint"):
        main([*run, "--ckpt_path", str(EMBEDDED / "model.safetensors")])
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"`ckpt_path` \(.*bad.ckpt\) is not a Lightning checkpoint"):
        main([*run, "--ckpt_path", str(tmp_path / "bad.ckpt")])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"`ckpt_path` \(.*other.ckpt\) is not a Lightning checkpoint \(no `state_dict`\)"):
        main([*run, "--ckpt_path", str(tmp_path / "other.ckpt")])
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("lr", "1e999", r"`lr` \(inf\) must be a finite number > 0"),
    ("lr", ".nan", r"`lr` \(nan\) must be a finite number > 0"),
    ("weight_decay", "1e999", r"`weight_decay` \(inf\) must be a finite number >= 0"),
])
def test_non_finite_optimiser_settings_are_named(tmp_path, flag, value, message):
    """An infinite rate trained and exported an all-NaN model over `export_dir` (by default the
    shipped one); a NaN one was refused as a resume 'with other settings' with no checkpoint given."""
    with pytest.raises(ValueError, match=message):
        main([*MDLM_FIT, f"--model.{flag}", value, "--model.export_dir", str(tmp_path / "m"),
              "--trainer.default_root_dir", str(tmp_path / "r")])
    with pytest.raises(ValueError, match=r"`lr` \(inf\) must be a finite number > 0"):
        HeadModule(lr=float("inf"))  # the head's too


def test_an_empty_export_directory_is_refused():
    """`--model.export_dir ""` exported nothing, silently (only null means no export)."""
    with pytest.raises(ValueError, match=r"`export_dir` \(''\) is empty; give a directory"):
        check_model_export_dir("")
    with pytest.raises(ValueError, match=r"`export_dir` \(' '\) is empty"):
        MDLMModule(export_dir=" ")


def test_a_fit_whose_weights_diverged_exports_nothing(tmp_path, capsys):
    out = tmp_path / "m"
    dm = TaskMixtureDataModule(tasks=["permutation"], pool_size=40, items_per_epoch=16, batch_size=8, val_size=4)
    module = _tiny_module(dm)
    module.hparams.export_dir = str(out)

    class Diverge(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            with torch.no_grad():
                pl_module.model.lm_head.weight.fill_(float("nan"))

    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[Diverge()], enable_checkpointing=False)
    trainer.fit(module, dm)
    assert not out.exists()
    assert "hold NaN or infinite values (e.g. lm_head.weight): the fit diverged" in capsys.readouterr().out


def test_a_fit_resumed_from_a_checkpoint_saved_at_an_epochs_end_trains_each_batch_once(tmp_path):
    """Saved by the epoch-end checkpoint (validation off), the resume trained the next epoch's first
    batch twice (once as a ninth batch of the finished epoch) and never its last one."""
    def fit(ckpt_path=None):
        dm = TaskMixtureDataModule(tasks=["permutation"], pool_size=40, items_per_epoch=32, batch_size=8, val_size=4)
        module, log = _tiny_module(dm), _BatchLog()
        at_epoch_end = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1,
                                       save_on_train_epoch_end=True)
        trainer = L.Trainer(max_steps=7, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, callbacks=[log, at_epoch_end])
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return log.seen, module

    full, full_module = fit()
    assert (tmp_path / "ckpt" / "epoch=0.ckpt").is_file()
    resumed, resumed_module = fit(tmp_path / "ckpt" / "epoch=0.ckpt")
    assert [(e, i) for e, i, _ in resumed] == [(1, 0), (1, 1), (1, 2)]
    assert all(torch.equal(a, b) for (*_, a), (*_, b) in zip(resumed, full[4:]))
    for (name, a), (_, b) in zip(full_module.state_dict().items(), resumed_module.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_resumed_pass_under_a_distributed_sampler_skips_that_epochs_batches():
    """Lightning sets a distributed sampler's epoch after it asks for the pass, so the skipped
    batches came from epoch 0's order: the rest of a resumed epoch 1 repeated and missed items."""
    dm = TaskMixtureDataModule(tasks=["permutation"], pool_size=40, items_per_epoch=64, batch_size=4, val_size=4)
    dm.setup()

    def loader(epoch):
        sampler = DistributedSampler(dm._train, num_replicas=2, rank=0, shuffle=True, seed=0)
        return _TrainLoader(dm._train, epoch_of=lambda: epoch, sampler=sampler, batch_size=4, drop_last=True,
                            collate_fn=lambda items: collate(items, dm.pad_id))

    fresh = loader(1)
    fresh.sampler.set_epoch(1)  # as Lightning does before an epoch it was not resuming
    whole = [b["input_ids"] for b in fresh]
    resumed = loader(1)
    resumed.load_state_dict({"epoch": 1, "trained": 3})
    rest = [b["input_ids"] for b in resumed]  # the sampler's epoch is still 0 here, as under Lightning
    assert len(whole) == 8 and len(rest) == 5 and all(torch.equal(a, b) for a, b in zip(rest, whole[3:]))
