"""The tiny MDLM's training: objective, data, LightningCLI wiring, export and resume."""

import math
import warnings

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from depmask.cli import main
from depmask.models import HFDenoiser
from depmask.train import TaskMixtureDataModule, collate
from tests.conftest import ROOT
from tests.train.mdlm_cli_run import CONFIG, SMALL, _BatchLog, _tiny_module


def test_collate_left_pads_and_marks_the_answer():
    batch = collate([([5, 6], [7, 8, 9]), ([5], [7])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [0, 0, 0, 5, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert batch["answer_mask"].tolist() == [[False, False, True, True, True], [False, False, False, False, True]]


def test_forward_process_masks_only_answers_and_weights_by_one_over_t():
    dm = TaskMixtureDataModule(tasks=["sort"], pool_size=8, items_per_epoch=8, batch_size=8, val_size=4)
    module = _tiny_module(dm)
    batch = collate([dm._train[i] for i in range(8)], dm.pad_id)
    seen = {}
    real_forward = module.model.forward

    def spy(input_ids, attention_mask=None, **kw):
        seen["noisy"] = input_ids.clone()
        return real_forward(input_ids=input_ids, attention_mask=attention_mask, **kw)

    module.model.forward = spy
    loss = module.diffusion_loss(batch, generator=torch.Generator().manual_seed(0))
    noisy, ids, ans = seen["noisy"], batch["input_ids"], batch["answer_mask"]
    assert torch.equal(noisy[~ans], ids[~ans]), "a prompt or pad token was masked"
    assert (noisy[ans] == dm.tokenizer.mask_token_id).any() and torch.isfinite(loss) and loss > 0
    # the weighting, by hand: every masked answer token's cross-entropy over its masking rate p(t)
    module.model.forward = real_forward
    t = torch.tensor([[0.2], [0.9], [0.5], [0.7], [0.3], [0.6], [0.4], [0.8]])
    uniforms = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1))
    total, count = module.diffusion_terms(batch, noise=(t, uniforms))
    p = (1 - module.hparams.eps) * t + module.hparams.eps
    masked = ans & (uniforms < p)
    noisy = torch.where(masked, dm.tokenizer.mask_token_id, ids)
    logits = module.model(input_ids=noisy, attention_mask=batch["attention_mask"]).logits
    ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none")
    by_hand = sum(ce[i, j] / p[i, 0] for i, j in masked.nonzero().tolist())
    assert masked.sum() > 0 and count == ans.sum()
    torch.testing.assert_close(total, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(total, (ce * masked).sum())  # the weighting is not a no-op here


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tasks": []}, r"`tasks` is empty"),
    ({"pool_size": 0}, r"`pool_size` \(0\) must be >= 1"),
    ({"batch_size": 0}, r"`batch_size` \(0\) must be >= 1"),
    ({"num_workers": -1}, r"`num_workers` \(-1\) must be >= 0"),
    ({"items_per_epoch": 50, "batch_size": 96}, r"`items_per_epoch` \(50\) is smaller than `batch_size` \(96\)"),
    ({"tasks": ["sort", "sort"]}, r"`tasks` \(\['sort', 'sort'\]\) names \['sort'\] more than once"),
])
def test_bad_data_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskMixtureDataModule(**kwargs)


def test_every_mdlm_yaml_parses(capsys):
    for path in sorted((ROOT / "configs" / "mdlm").glob("*.yaml")):
        try:
            main(["mdlm", "fit", "--config", str(path), "--print_config"])
        except SystemExit as e:
            assert e.code in (0, None)
        cfg = yaml.safe_load(capsys.readouterr().out)
        assert cfg["model"]["export_dir"] and cfg["data"]["tasks"]


def test_fit_exports_a_loadable_model_and_resumes(tmp_path):
    out, runs = tmp_path / "model", tmp_path / "runs"
    main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "2",
          "--model.export_dir", str(out), "--trainer.default_root_dir", str(runs)])
    den = HFDenoiser.from_pretrained(out)
    assert den.tokenizer is not None and den.mask_id == den.tokenizer.mask_token_id
    saved = list(runs.rglob("config.yaml"))
    assert saved, "LightningCLI must save the resolved config in the run directory"
    ckpts = sorted(runs.rglob("*.ckpt"))
    assert ckpts
    with warnings.catch_warnings(record=True) as caught:  # step 2 of 8 in the epoch: a mid-epoch resume
        warnings.simplefilter("always")
        main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "4",
              "--model.export_dir", str(tmp_path / "resumed"), "--trainer.default_root_dir", str(runs),
              "--ckpt_path", str(ckpts[-1])])
    assert not [w for w in caught if "not resumable" in str(w.message)], "the train loader must be resumable"
    state = torch.load(sorted(runs.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)[-1], weights_only=False)
    assert state["global_step"] == 4


def test_csv_logger_writes_metrics(tmp_path):
    args = [a for a in SMALL]
    args[args.index("--trainer.logger") + 1] = "CSVLogger"
    main(["mdlm", "fit", "--config", str(CONFIG), *args, "--trainer.logger.save_dir", str(tmp_path),
          "--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1", "--model.export_dir", str(tmp_path / "m"),
          "--trainer.default_root_dir", str(tmp_path)])
    metrics = list(tmp_path.rglob("metrics.csv"))
    assert metrics and "train/loss" in metrics[0].read_text().splitlines()[0]


def test_default_logger_is_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    args = [a for a in SMALL]
    i = args.index("--trainer.logger")
    del args[i:i + 2]  # keep the default logger
    main(["mdlm", "fit", "--config", str(CONFIG), *args, "--trainer.logger.init_args.save_dir", str(tmp_path),
          "--trainer.max_steps", "2", "--model.export_dir", str(tmp_path / "m"),
          "--trainer.default_root_dir", str(tmp_path)])
    import os

    assert os.environ["WANDB_MODE"] == "offline"
    assert list(tmp_path.rglob("offline-run-*")), "no offline wandb run was written"


def _fit_logging_batches(ckpt_dir, max_steps, ckpt_path=None, modules=None):
    """A tiny MDLM fit of 4 batches an epoch, saving a checkpoint after every step; returns the
    (epoch, batch index, input ids) of every batch it trained on (`modules` receives the module)."""
    dm = TaskMixtureDataModule(tasks=["permutation"], pool_size=40, items_per_epoch=32, batch_size=8, val_size=4)
    module = _tiny_module(dm)
    log = _BatchLog()
    every_step = ModelCheckpoint(dirpath=ckpt_dir, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[log, every_step])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, dm, ckpt_path=ckpt_path)
    assert not [w for w in caught if "not resumable" in str(w.message)]
    if modules is not None:
        modules.append(module)
    return log.seen


def test_each_epoch_draws_new_batches_and_a_resumed_fit_trains_on_the_rest(tmp_path):
    full = _fit_logging_batches(tmp_path / "full", max_steps=10)  # 2.5 epochs
    assert [(e, i) for e, i, _ in full] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1)]
    first, second = [ids for e, _, ids in full if e == 0], [ids for e, _, ids in full if e == 1]
    assert not any(torch.equal(a, b) for a in first for b in second), "epoch 1 repeated epoch 0's batches"
    assert all(torch.equal(a, b) for (*_, a), (*_, b) in zip(full, _fit_logging_batches(tmp_path / "again", 10)))
    for step in (2, 4, 5):  # inside epoch 0, at its end, inside epoch 1
        resumed = _fit_logging_batches(tmp_path / f"from{step}", 10, ckpt_path=tmp_path / "full" / f"step={step}.ckpt")
        assert [(e, i) for e, i, _ in resumed] == [(e, i) for e, i, _ in full[step:]], step
        assert all(torch.equal(a, b) for (*_, a), (*_, b) in zip(resumed, full[step:])), step


def test_a_resumed_fit_ends_with_the_weights_of_the_uninterrupted_one(tmp_path):
    """The masking noise came from the global RNG, which a checkpoint does not hold: a resumed fit
    replayed the noise of the first steps (same batches, other masks, other weights)."""
    full, resumed = [], []
    _fit_logging_batches(tmp_path / "full", max_steps=6, modules=full)
    for step in (3, 4):  # inside epoch 0, at its end
        resumed.clear()
        _fit_logging_batches(tmp_path / f"from{step}", 6, ckpt_path=tmp_path / "full" / f"step={step}.ckpt",
                             modules=resumed)
        for (name, a), (_, b) in zip(full[0].state_dict().items(), resumed[0].state_dict().items()):
            assert torch.equal(a, b), (step, name)


@pytest.mark.parametrize("bound", [{"max_epochs": 2}, {"max_steps": 8}])
def test_the_learning_rate_schedule_spans_the_fit(bound):
    """Warm-up, then cosine decay to 0.1 × lr at the fit's last step, whichever of `max_epochs`
    and `max_steps` bounds the fit (with `max_epochs` it used to assume 10,000 steps)."""
    dm = TaskMixtureDataModule(tasks=["permutation"], pool_size=40, items_per_epoch=32, batch_size=8, val_size=4)
    module = _tiny_module(dm)
    module.hparams.warmup_steps = 2
    trainer = L.Trainer(**bound, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=0)
    rates = []

    class Rates(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"] / module.hparams.lr)

    trainer.callbacks.append(Rates())
    trainer.fit(module, dm)
    assert trainer.global_step == 8
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * module.hparams.lr)
    # linear warm-up over 2 steps, then the cosine from 1 (step 2) down to 0.1 after step 8
    assert len(rates) == 8 and rates[:4] == pytest.approx([0.5, 1.0, 1.0, 0.1 + 0.45 * (1 + math.cos(math.pi / 6))])
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"val_decode_items": -1}, r"`val_decode_items` \(-1\) must be an int >= 0"),
    ({"num_hidden_layers": 0}, r"`num_hidden_layers` \(0\) must be an int >= 1"),
    ({"hidden_size": 130}, r"`hidden_size` \(130\) must be a multiple of `num_attention_heads` \(4\)"),
    ({"weight_decay": -1.0}, r"`weight_decay` \(-1.0\) must be a finite number >= 0"),
])
def test_bad_mdlm_settings_are_named(kwargs, message):
    from depmask.train.mdlm_module import MDLMModule

    with pytest.raises(ValueError, match=message):
        MDLMModule(**kwargs)


def test_a_vocabulary_smaller_than_the_tokenizer_is_named(tmp_path):
    """It failed in the first training step with a raw `TypeError` from `torch.where`."""
    with pytest.raises(ValueError, match=r"`vocab_size` \(5\) is smaller than the data's tokenizer"):
        main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "1", "--model.vocab_size", "5",
              "--model.export_dir", str(tmp_path / "m"), "--trainer.default_root_dir", str(tmp_path / "runs")])


def test_positions_shorter_than_the_data_are_named_before_training(tmp_path):
    """It failed in the first forward, on the position embedding's index."""
    from depmask.train.mdlm_data import TaskMixtureDataModule

    with pytest.raises(ValueError, match=r"`max_position_embeddings` \(8\) is shorter than the data's longest "
                                         r"sequence \((\d+) tokens"):
        main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "1",
              "--model.max_position_embeddings", "8", "--model.export_dir", str(tmp_path / "m"),
              "--trainer.default_root_dir", str(tmp_path / "runs")])
    data = TaskMixtureDataModule(tasks=["sudoku4", "permutation"], pool_size=8, val_size=4, items_per_epoch=4, batch_size=2)
    data.setup()
    items = [data._val[i] for i in range(len(data._val))] + [data._train[i] for i in range(4)]
    assert data.longest == max(len(p) + len(a) for p, a in items)  # the answers' length is the reference's


def test_token_ids_other_than_the_tokenizers_are_refused_and_vocab_size_alone_takes_them(tmp_path):
    """A mask id the tokenizer does not write trained a model whose decodes used another mask;
    `vocab_size` alone failed in the first step with a raw `TypeError` (no mask id)."""
    run = ["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "1",
           "--trainer.default_root_dir", str(tmp_path / "runs")]
    with pytest.raises(ValueError, match=r"`mask_token_id` \(5\) is not the data tokenizer's \(\d+\)"):
        main([*run, "--model.vocab_size", "64", "--model.mask_token_id", "5", "--model.export_dir", str(tmp_path / "a")])
    with pytest.raises(ValueError, match=r"`mask_token_id` \(5\) is not the data tokenizer's"):
        main([*run, "--model.mask_token_id", "5", "--model.export_dir", str(tmp_path / "b")])
    main([*run, "--model.vocab_size", "64", "--model.export_dir", str(tmp_path / "c")])
    den = HFDenoiser.from_pretrained(tmp_path / "c")
    assert den.vocab_size == 64 and den.model.config.mask_token_id == den.tokenizer.mask_token_id == den.mask_id


def test_a_fit_that_trains_nothing_or_a_dry_run_exports_nothing(tmp_path, capsys):
    """`fast_dev_run` (a one-batch check) replaced the export directory, by default the shipped model's."""
    out = tmp_path / "m"
    main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.fast_dev_run", "true",
          "--model.export_dir", str(out), "--trainer.default_root_dir", str(tmp_path / "runs")])
    assert not out.exists() and "not exporting to" in capsys.readouterr().out


def test_export_sets_the_replaced_models_card_aside_and_writes_its_config(tmp_path, capsys):
    """Retraining into a model's directory left the old model's card, table and training notes
    beside the new weights (and `mdlm evaluate` copied the old notes into the new card)."""
    import shutil

    out = tmp_path / "m"
    shutil.copytree(ROOT / "models" / "tiny-tasks", out)
    old_card = (out / "README.md").read_text()
    main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "1", "--model.val_decode_items", "0",
          "--model.export_dir", str(out), "--trainer.default_root_dir", str(tmp_path / "runs")])
    assert "moved the replaced model's README.md, eval.json, TRAINING.md" in capsys.readouterr().out
    assert not (out / "README.md").exists() and not (out / "eval.json").exists() and not (out / "TRAINING.md").exists()
    assert (out / "previous" / "README.md").read_text() == old_card
    config = yaml.safe_load((out / "train_config.yaml").read_text())
    assert config["model"]["hidden_size"] == 32 and config["trainer"]["max_steps"] == 1
    main(["mdlm", "evaluate", "--model", str(out), "--n", "2", "--tasks", "[sort]"])
    card = (out / "README.md").read_text()
    assert "every setting of that fit is in `train_config.yaml`" in card and "H100" not in card
    # a second export: `previous/` holds the set of the model it replaces, not a mix of two models'
    first_config = (out / "train_config.yaml").read_text()
    main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "1", "--model.val_decode_items", "0",
          "--model.export_dir", str(out), "--trainer.default_root_dir", str(tmp_path / "runs2")])
    assert sorted(p.name for p in (out / "previous").iterdir()) == ["README.md", "eval.json", "train_config.yaml"]
    assert (out / "previous" / "train_config.yaml").read_text() == first_config
    assert (out / "previous" / "README.md").read_text() == card


def test_export_refuses_a_head_or_another_models_directory_before_training(tmp_path):
    run = ["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "1",
           "--trainer.default_root_dir", str(tmp_path / "runs")]
    with pytest.raises(ValueError, match=r"holds a dependency head; the MDLM export would replace"):
        main([*run, "--model.export_dir", str(ROOT / "models" / "tiny-tasks-head")])
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match=r"holds a 'bert' model"):
        main([*run, "--model.export_dir", str(other)])


def test_an_endless_fit_is_named_before_it_starts(tmp_path):
    with pytest.raises(ValueError, match=r"bound it with `--trainer.max_steps` or `--trainer.max_epochs`"):
        main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--trainer.max_steps", "-1", "--trainer.max_epochs", "-1",
              "--model.export_dir", str(tmp_path / "m"), "--trainer.default_root_dir", str(tmp_path / "runs")])


def test_val_loss_is_the_ratio_of_sums_over_the_val_set():
    """Each batch's ratio was averaged with sequence-count weights: a batch of short answers
    counted as much as one of long answers."""
    dm = TaskMixtureDataModule(tasks=["sort", "sudoku4"], pool_size=40, items_per_epoch=32, batch_size=8, val_size=12)
    module = _tiny_module(dm)
    batches = list(dm.val_dataloader())
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    module.hparams.val_decode_items = 0
    logged = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    sums = [module.diffusion_terms(b, noise=module.item_noise(b)) for b in batches]
    expected = sum(float(w) for w, _ in sums) / sum(float(n) for _, n in sums)
    assert len(batches) > 1 and logged == pytest.approx(expected, rel=1e-5)
    # each item's noise is its own: the same val loss at any val batch size (it moved by 20 %)
    for size in (3, 12):
        other = TaskMixtureDataModule(tasks=["sort", "sudoku4"], pool_size=40, items_per_epoch=32, batch_size=size,
                                      val_size=12)
        again = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        assert again.validate(module, datamodule=other, verbose=False)[0]["val/loss"] == pytest.approx(logged, rel=1e-5)


def test_evaluate_refuses_a_task_the_model_cannot_write_and_the_card_names_its_own_tasks(tmp_path):
    """A model trained on `sort` alone was scored on `addition` with `[UNK]` prompts (0 %, written
    to eval.json and the card), and its card named the embedded model's four tasks."""
    out = tmp_path / "m"
    main(["mdlm", "fit", "--config", str(CONFIG), *SMALL, "--data.tasks", "[sort]", "--trainer.max_steps", "1",
          "--model.val_decode_items", "0", "--model.export_dir", str(out),
          "--trainer.default_root_dir", str(tmp_path / "runs")])
    with pytest.raises(ValueError, match=r"task 'addition' uses \d+ symbol\(s\) the model's tokenizer does not have"):
        main(["mdlm", "evaluate", "--model", str(out), "--n", "2", "--tasks", "[addition]"])
    assert not (out / "eval.json").exists()
    main(["mdlm", "evaluate", "--model", str(out), "--n", "2", "--tasks", "[sort]"])
    card = (out / "README.md").read_text()
    assert card.startswith("# m: a masked diffusion LM trained by depmask")
    assert "1 synthetic task with exact verifiers:\n`sort`." in card and "`sudoku4`" not in card


def test_under_ddp_every_val_item_is_validated_once(monkeypatch):
    """Lightning's padding sampler repeated val items to even out the ranks (258 items seen for 256
    on 3 devices), and `val/loss` counted them twice."""
    dm = TaskMixtureDataModule(tasks=["sort", "sudoku4"], pool_size=40, items_per_epoch=32, batch_size=4, val_size=11)
    dm.setup("fit")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 3)
    seen = []
    for rank in range(3):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, r=rank, **k: r)
        seen += list(dm.val_dataloader().sampler)
    assert sorted(seen) == list(range(len(dm._val)))
