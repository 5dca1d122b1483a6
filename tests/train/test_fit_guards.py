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
from tests.train.mdlm_cli_run import CONFIG, MDLM_FIT, SMALL, _a_fit, _BatchLog, _tiny_module


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


@pytest.mark.parametrize("limit", [None, 2])
def test_a_fit_resumed_from_a_checkpoint_saved_at_an_epochs_end_trains_each_batch_once(tmp_path, limit):
    """Saved by the epoch-end checkpoint (validation off), the resume trained the next epoch's first
    batch twice (once as a ninth batch of the finished epoch) and never its last one; under
    `limit_train_batches` it trained a batch of the finished epoch that the fit never trains."""
    per_epoch = limit or 4

    def fit(ckpt_path=None):
        dm = TaskMixtureDataModule(tasks=["permutation"], pool_size=40, items_per_epoch=32, batch_size=8, val_size=4)
        module, log = _tiny_module(dm), _BatchLog()
        at_epoch_end = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1,
                                       save_on_train_epoch_end=True)
        trainer = L.Trainer(max_steps=per_epoch + 3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, callbacks=[log, at_epoch_end], limit_train_batches=limit)
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return log.seen, module

    full, full_module = fit()
    assert (tmp_path / "ckpt" / "epoch=0.ckpt").is_file()
    resumed, resumed_module = fit(tmp_path / "ckpt" / "epoch=0.ckpt")
    assert [(e, i) for e, i, _ in resumed] == [(e, i) for e, i, _ in full[per_epoch:]]
    assert resumed[0][:2] == (1, 0) and all(torch.equal(a, b) for (*_, a), (*_, b) in zip(resumed, full[per_epoch:]))
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


def test_a_checkpoint_path_with_a_tilde_is_compared_like_any_other(tmp_path, monkeypatch):
    """`~/…` skipped every comparison of settings (they read the path unexpanded) while Lightning
    still resumed from it: other settings resumed silently."""
    ckpt = _a_fit(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    tilde = "~/" + str(ckpt.relative_to(tmp_path))
    with pytest.raises(ValueError, match=r"`ckpt_path` \(.*\.ckpt\) resumes a run trained with other settings.*"
                                         r"model.lr is [0-9.e-]+ in the checkpoint, 0.5 here"):
        main([*MDLM_FIT, "--model.lr", "0.5", "--model.export_dir", "null", "--ckpt_path", tilde])


def test_validate_may_measure_otherwise_but_not_load_other_weights(tmp_path, capsys):
    """`validate` with other validation data or settings was refused as 'resuming a run with other
    settings', with advice (drop --ckpt_path) that is itself refused now."""
    ckpt = _a_fit(tmp_path)
    run = ["mdlm", "validate", "--config", str(CONFIG), *SMALL, "--model.export_dir", "null", "--trainer.logger", "false",
           "--ckpt_path", str(ckpt)]
    main([*run, "--data.val_size", "4", "--model.val_decode_items", "1"])
    assert "val/loss" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"holds weights trained with other model settings than this command's: "
                                         r"model.hidden_size is 32 in the checkpoint, 64 here.*only export_dir, "
                                         r"val_decode_items may differ"):
        main([*run, "--model.hidden_size", "64"])


def test_a_checkpoint_of_the_other_kind_of_model_is_named(tmp_path, harvest):
    """A head's checkpoint given to `mdlm fit` failed in jsonargparse on settings it did not know."""
    main(["train", "fit", "--config", str(CONFIG.parents[1] / "train" / "head-tiny.yaml"), "--data.harvest", str(harvest),
          "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
          "--model.export_dir", "null", "--checkpoint.dirpath", str(tmp_path / "head-run")])
    with pytest.raises(ValueError, match=r"is a checkpoint of another kind of model: its settings .* are not "
                                         r"MDLMModule's"):
        main([*MDLM_FIT, "--model.export_dir", "null", "--ckpt_path", str(tmp_path / "head-run" / "last.ckpt")])


def test_train_head_says_when_it_exported_nothing(tmp_path, harvest, monkeypatch):
    """A diverged fit printed 'not exporting' but `train_head` returned the path and metrics as if a
    head were there: quickstart printed them and failed later, at decoding, on a missing head."""
    from depmask.train import head_module
    from depmask.train.head_fit import train_head

    monkeypatch.setattr(head_module, "nonfinite_reason", lambda module: "diverged (simulated)")
    with pytest.raises(ValueError, match=r"train_head: no head was exported to .*head"):
        train_head(harvest, tmp_path / "head", epochs=1, batch_size=8, progress=False, run_dir=tmp_path / "run")
    assert not (tmp_path / "head" / "config.json").exists()
