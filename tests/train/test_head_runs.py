"""A head's training run on disk: checkpoints, resume, export, run directories, and the same head from the same seed."""

import csv
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from depmask.cli import main
from depmask.predictor import DependencyHead
from depmask.train.head_data import HeadDataModule
from tests.conftest import EMBEDDED
from tests.train.head_cli_run import CONFIG, FAST, fit


def test_csv_logger_metrics_checkpoint_and_resume(harvest, tmp_path):
    logs = tmp_path / "logs"
    fit(harvest, tmp_path, "--trainer.max_epochs", "2", "--trainer.logger", "CSVLogger",
        "--trainer.logger.save_dir", str(logs))
    metrics = next(logs.rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    for name in ("train/loss", "val/loss", "val/auroc", "val/ap", "val/spearman", "val/precision_at_k",
                 "val/auroc_attention", "val/ap_attention"):
        assert name in metrics, name
    run = tmp_path / "run"
    assert (run / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    cfg = yaml.safe_load((tmp_path / "head" / "train_config.yaml").read_text())  # the resolved config
    assert cfg["data"]["harvest"] == str(harvest) and cfg["model"]["dim"] == 32
    assert any(p.name.startswith("head-") for p in run.glob("*.ckpt"))
    manifest = DependencyHead.from_pretrained(tmp_path / "head").training_manifest
    assert manifest["monitor"] == "val/loss" and manifest["best_score"] == pytest.approx(  # the config's monitor
        min(float(r["val/loss"]) for r in csv.DictReader(next(logs.rglob("metrics.csv")).open()) if r["val/loss"]))
    fit(harvest, tmp_path, "--trainer.max_epochs", "3", "--trainer.logger", "false",
        "--ckpt_path", str(run / "last.ckpt"))
    assert torch.load(run / "last.ckpt", weights_only=False)["epoch"] == 2


def test_a_resume_continues_from_the_last_epoch_in_its_own_run(harvest, tmp_path):
    """`last.ckpt` follows every epoch, not only those that improve the monitored metric (Lightning
    2.6 rewrote it only with a new top-k checkpoint, so a resume repeated the epochs after the last
    improving one); the resumed run keeps its checkpoints in the run it resumes, so the best of all
    its epochs is exported; and a `--model.*` setting other than the checkpoint's is refused instead
    of silently replaced by it (`--model.export_dir` may change)."""
    run = tmp_path / "run"
    # `mode: max` on the falling val loss: only the first epoch makes a top-k checkpoint
    fit(harvest, tmp_path, "--trainer.max_epochs", "3", "--trainer.logger", "false", "--checkpoint.mode", "max")
    last = torch.load(run / "last.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 3 * (last["global_step"] // 3) > 0
    steps_per_epoch = last["global_step"] // 3
    assert len(list(run.glob("head-*.ckpt"))) == 1
    with pytest.raises(ValueError, match=r"model\.lr is 0\.002 in the checkpoint, 0\.003 here"):
        fit(harvest, tmp_path, "--trainer.max_epochs", "4", "--trainer.logger", "false", "--checkpoint.mode", "max",
            "--model.lr", "0.003", "--ckpt_path", str(run / "last.ckpt"))
    with pytest.raises(ValueError, match=r"data\.val_fraction is 0\.3 in the checkpoint, 0\.5 here"):  # other data
        fit(harvest, tmp_path, "--trainer.max_epochs", "4", "--trainer.logger", "false", "--checkpoint.mode", "max",
            "--data.val_fraction", "0.5", "--ckpt_path", str(run / "last.ckpt"))
    main(["train", "fit", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest), "--trainer.max_epochs", "4",
          "--trainer.logger", "false", "--checkpoint.mode", "max", "--model.export_dir", str(tmp_path / "head2"),
          "--ckpt_path", str(run / "last.ckpt")])  # no --checkpoint.dirpath: the run's own directory
    last = torch.load(run / "last.ckpt", weights_only=False)
    assert last["epoch"] == 3 and last["global_step"] == 4 * steps_per_epoch  # one more epoch, none repeated
    assert DependencyHead.from_pretrained(tmp_path / "head2").training_manifest["checkpoint"].startswith(str(run))
    before = (tmp_path / "head" / "model.safetensors").read_bytes()
    fit(harvest, tmp_path, "--trainer.max_epochs", "5", "--trainer.logger", "false", "--checkpoint.mode", "max",
        "--model.export_dir", "null", "--ckpt_path", str(run / "last.ckpt"))  # `null`: export nothing
    assert (tmp_path / "head" / "model.safetensors").read_bytes() == before  # the first run's head untouched


def test_the_export_holds_the_config_of_its_weights_and_a_moved_run_resumes_in_its_new_place(harvest, tmp_path):
    """`train_config.yaml` was written into the export folder when a run started: a killed fit, or
    `train validate`, left a config beside weights it did not make. A run directory moved and
    resumed from there lost its `last.ckpt` (the resumed epochs went to `last-v1.ckpt`) and the
    epochs before the move no longer competed for the exported best."""
    # `mode: max` on the falling val loss: the best checkpoint is the first epoch's, before the move
    fit(harvest, tmp_path, "--trainer.max_epochs", "2", "--trainer.logger", "false", "--checkpoint.mode", "max")
    head = tmp_path / "head"
    before = (head / "train_config.yaml").read_text()
    main(["train", "validate", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest),
          "--model.export_dir", str(head), "--trainer.logger", "false", "--ckpt_path", str(tmp_path / "run" / "last.ckpt")])
    assert (head / "train_config.yaml").read_text() == before  # validate exports nothing, writes nothing there
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    scores = torch.load(moved / "last.ckpt", weights_only=False)["callbacks"]
    main(["train", "fit", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest), "--trainer.max_epochs", "3",
          "--trainer.logger", "false", "--checkpoint.mode", "max", "--model.export_dir", str(head),
          "--ckpt_path", str(moved / "last.ckpt")])
    assert not (tmp_path / "run").exists() and not list(moved.glob("last-v*.ckpt"))
    assert torch.load(moved / "last.ckpt", weights_only=False)["epoch"] == 2
    manifest = DependencyHead.from_pretrained(head).training_manifest
    earlier = next(v for k, v in scores.items() if k.startswith("RunCheckpoint"))
    # the epoch before the move is still the best: it is exported from its new place
    assert manifest["best_score"] == pytest.approx(float(earlier["best_model_score"]))
    assert manifest["checkpoint"] == str(moved / Path(earlier["best_model_path"]).name)


def test_no_export_from_a_dry_run_or_over_a_model(harvest, tmp_path, capsys):
    """`fast_dev_run` and `max_epochs 0` exported an untrained head; an `export_dir` holding a model
    (the flag means the model's directory in `mdlm fit`) had its config and weights replaced."""
    fit(harvest, tmp_path, "--trainer.fast_dev_run", "true", "--trainer.logger", "false")
    assert not (tmp_path / "head").exists() and "a fast_dev_run checks the code" in capsys.readouterr().out
    fit(harvest, tmp_path, "--trainer.max_epochs", "0", "--trainer.logger", "false",
        "--checkpoint.dirpath", str(tmp_path / "run0"))  # a new run: the dry run left a checkpoint in `run`
    assert not (tmp_path / "head").exists() and "took no optimiser step" in capsys.readouterr().out
    model = tmp_path / "model"
    shutil.copytree(EMBEDDED, model)
    before = (model / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"`export_dir` \(.*model'\) holds a model \('tiny_mdlm'\)"):
        main(["train", "fit", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest), "--trainer.max_steps", "1",
              "--trainer.logger", "false", "--model.export_dir", str(model), "--checkpoint.dirpath", str(tmp_path / "run2")])
    assert (model / "model.safetensors").read_bytes() == before


def test_a_new_fit_is_refused_a_directory_holding_another_runs_checkpoints(harvest, tmp_path):
    # a config printed or saved by a run names its directory; a second fit from it mixed the two runs
    fit(harvest, tmp_path, "--trainer.max_steps", "1", "--trainer.logger", "false")
    saved = (tmp_path / "run" / "config.yaml").read_bytes()
    with pytest.raises(ValueError, match=r"`checkpoint.dirpath` \(.*run\) holds another run's checkpoints.*"
                                         r"--ckpt_path .*last.ckpt"):
        fit(harvest, tmp_path, "--trainer.max_steps", "1", "--trainer.logger", "false")
    assert (tmp_path / "run" / "config.yaml").read_bytes() == saved
    assert not list((tmp_path / "run").glob("*-v1.ckpt"))
    main(["train", "validate", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest),  # reading it is fine
          "--model.export_dir", str(tmp_path / "head"), "--checkpoint.dirpath", str(tmp_path / "run"),
          "--trainer.logger", "false", "--ckpt_path", str(tmp_path / "run" / "last.ckpt")])


def _lrs(logs: Path) -> dict[int, float]:
    rows = csv.DictReader(next(logs.rglob("metrics.csv")).open())
    return {int(r["step"]): float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")}


def test_a_resume_with_more_epochs_takes_the_longer_schedule_from_its_first_step(harvest, tmp_path):
    """The rebuilt schedule spans the longer fit, but Lightning restored the optimiser's saved rate
    (the old cosine's end, 0.1 × lr): the first resumed step ran at it."""
    monitor = ["--trainer.callbacks+=LearningRateMonitor", "--trainer.callbacks.logging_interval", "step",
               "--trainer.logger", "CSVLogger", "--model.warmup_steps", "2"]
    full, part = tmp_path / "full", tmp_path / "part"
    fit(harvest, full, "--trainer.max_epochs", "2", *monitor, "--trainer.logger.save_dir", str(full / "logs"))
    fit(harvest, part, "--trainer.max_epochs", "1", *monitor, "--trainer.logger.save_dir", str(part / "logs1"))
    fit(harvest, part, "--trainer.max_epochs", "2", *monitor, "--trainer.logger.save_dir", str(part / "logs2"),
        "--ckpt_path", str(part / "run" / "last.ckpt"))
    whole, resumed = _lrs(full / "logs"), _lrs(part / "logs2")
    assert resumed and set(resumed) < set(whole)
    rates = [whole[s] for s in sorted(whole)]  # the schedule itself: 2 warm-up steps, then a falling cosine
    assert rates[0] == pytest.approx(0.5 * rates[1]) and rates[1] == pytest.approx(rates[2])
    assert all(a > b for a, b in zip(rates[2:], rates[3:])) and rates[-1] < 0.5 * rates[1]
    for step, lr in resumed.items():
        assert lr == pytest.approx(whole[step], rel=1e-6), step


def test_last_ckpt_follows_epochs_without_validation_and_validate_keeps_the_fits_config(harvest, tmp_path):
    """With `check_val_every_n_epoch 2` Lightning's epoch-end hook never rewrote `last.ckpt` in the
    epochs without validation (a resume trained them again); `train validate --ckpt_path` of the
    run replaced its `config.yaml` with the validate's settings, which `train fit --config` refuses."""
    fit(harvest, tmp_path, "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "2",
        "--trainer.logger", "false")
    run = tmp_path / "run"
    last = torch.load(run / "last.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 3 * (last["global_step"] // 3) > 0
    saved = (run / "config.yaml").read_text()
    main(["train", "validate", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest),
          "--trainer.logger", "false", "--ckpt_path", str(run / "last.ckpt")])
    assert (run / "config.yaml").read_text() == saved


def test_the_training_order_is_the_seed_and_epoch_alone(harvest, monkeypatch):
    """`shuffle=True` drew each epoch's order from the global generator, which every loader
    iterator also draws from: `--data.num_workers` and the validation frequency changed the order,
    and the same seed trained another head."""
    from depmask.train.epoch_sampler import EpochShuffle

    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    dm = HeadDataModule(str(harvest), val_fraction=0.3, batch_size=4)

    def order(epoch, draws):
        torch.rand(draws)  # whatever else drew from the global generator before
        loader = dm.train_dataloader()
        assert isinstance(loader.sampler, EpochShuffle) and loader.sampler.seed == 3
        loader.sampler.set_epoch(epoch)
        return [s for batch in loader for s in batch["state"].tolist()]

    first = order(1, 0)
    assert first == order(1, 5) and sorted(first) == sorted(dm.train_idx)
    assert first != order(2, 0)
    assert list(EpochShuffle(10, seed=4)) != list(EpochShuffle(10, seed=3))


def test_the_same_seed_trains_the_same_head_whatever_the_validation_frequency(harvest, tmp_path):
    """With dropout, validating every epoch or only at the end moved the masks (each new loader
    iterator drew its seed from the global generator the masks come from): other weights."""
    weights = []
    for every in ("1", "3"):
        fit(harvest, tmp_path / every, "--trainer.max_epochs", "3", "--trainer.max_steps", "-1", "--model.dropout",
            "0.1", "--trainer.check_val_every_n_epoch", every, "--trainer.logger", "false")
        weights.append(torch.load(tmp_path / every / "run" / "last.ckpt", weights_only=False)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
