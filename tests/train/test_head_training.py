"""The dependency head's training: data split, LightningCLI wiring, export, loggers, resume, errors."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from depmask.cli import main
from depmask.data_gen import HarvestConfig
from depmask.data_gen.dataset import HarvestError
from depmask.data_gen.schema import records_to_table
from depmask.data_gen.shards import write_shard
from depmask.predictor import DependencyHead
from depmask.train.harvest import run_harvest
from depmask.train.head_data import HeadDataModule, collate_states
from tests.conftest import EMBEDDED, ROOT
from tests.data_gen.test_schema_shards import record

CONFIG = ROOT / "configs" / "train" / "head-tiny.yaml"
FAST = ["--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1", "--model.dim", "32", "--model.layers", "1",
        "--data.batch_size", "16", "--data.val_fraction", "0.3"]


@pytest.fixture(scope="module")
def harvest(tmp_path_factory):
    out = tmp_path_factory.mktemp("harvest") / "h"
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(out), tasks=["sudoku4", "permutation"],
                        examples_per_task=12, states_per_example=3, batch_size=12)
    run_harvest(cfg, {"accelerator": "cpu"})
    return out


def fit(harvest, tmp_path, *extra):
    main(["train", "fit", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest),
          "--model.export_dir", str(tmp_path / "head"), "--checkpoint.dirpath", str(tmp_path / "run"), *extra])


def test_val_split_is_by_example(harvest):
    dm = HeadDataModule(str(harvest), val_fraction=0.3)
    assert dm.train_examples and dm.val_examples
    assert not dm.train_examples & dm.val_examples
    ids = dm.data["example_id"]
    assert {ids[i] for i in dm.train_idx} == dm.train_examples and {ids[i] for i in dm.val_idx} == dm.val_examples
    batch = next(iter(dm.val_dataloader()))
    b, m = batch["valid"].shape
    assert batch["hidden"].shape == (b, m, dm.hidden_size) and batch["tv"].shape == (b, m, m)
    assert (batch["tv"][~batch["valid"]] == 0).all()


def test_collate_pads_ragged_states():
    rows = [{**vars(record("a", 0, 4)), "state": 0}, {**vars(record("b", 0, 2)), "state": 1}]
    batch = collate_states(rows)
    assert batch["valid"].tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.equal(batch["tv"][1, :2, :2], torch.as_tensor(rows[1]["tv"], dtype=torch.float32))
    assert (batch["tv"][1, 2:] == 0).all()
    for i, r in enumerate(rows):  # every field the head reads, as recorded: not dropped, not transposed
        k = len(r["positions"])
        for name in ("hidden", "positions", "confidence", "entropy", "attention", "tv"):
            want = torch.as_tensor(np.asarray(r[name])).to(batch[name].dtype)
            got = batch[name][i, :k, :k] if name in ("tv", "attention") else batch[name][i, :k]
            assert torch.equal(got, want), name
    assert not torch.equal(batch["attention"][0], batch["attention"][0].T)  # the check can see a transpose


def test_a_short_fit_exports_a_loadable_head(harvest, tmp_path):
    fit(harvest, tmp_path, "--trainer.max_steps", "1", "--trainer.logger", "false")
    from depmask.models import HFDenoiser

    head = DependencyHead.from_pretrained(tmp_path / "head", denoiser=HFDenoiser.from_pretrained(EMBEDDED))
    assert head.training_manifest["harvest"] == str(harvest) and head.training_manifest["val_examples"] > 0


def test_a_student_distils_from_a_teacher_head_through_the_cli(harvest, tmp_path):
    fit(harvest, tmp_path / "t", "--trainer.max_steps", "1", "--trainer.logger", "false", "--model.dim", "64")
    fit(harvest, tmp_path / "s", "--trainer.max_steps", "2", "--trainer.logger", "false", "--model.layers", "0",
        "--model.teacher", str(tmp_path / "t" / "head"), "--model.teacher_weight", "0.5")
    student = DependencyHead.from_pretrained(tmp_path / "s" / "head")
    assert student.config["dim"] == 32 and student.config["layers"] == 0  # the student's, not the teacher's
    saved = yaml.safe_load((tmp_path / "s" / "head" / "train_config.yaml").read_text())
    assert saved["model"]["teacher"] == str(tmp_path / "t" / "head") and saved["model"]["teacher_weight"] == 0.5


def test_a_head_reading_attention_trains_on_the_harvested_attention(harvest, tmp_path):
    """The module hands the batch's attention to the head (which refuses to run without it)."""
    fit(harvest, tmp_path, "--trainer.max_steps", "1", "--trainer.logger", "false", "--model.use_attention", "true")
    head = DependencyHead.from_pretrained(tmp_path / "head")
    assert head.use_attention and head.scorer.att is not None
    # the harvest captured the default layers: a model capturing others is refused (same fingerprint)
    from depmask.models import HFDenoiser

    assert head.training_manifest["capture_layers"] is None and head.training_manifest["topk"] == 1
    assert len(head.training_manifest["harvest_sha256"]) == 64
    head.check_compatible(HFDenoiser.from_pretrained(EMBEDDED))
    other = HFDenoiser.from_pretrained(EMBEDDED, capture_layers=[0])
    with pytest.raises(ValueError, match=r"reads attention averaged over layers \[\d+\].*captures layers \[0\]"):
        head.check_compatible(other)
    with pytest.raises(ValueError, match=r"capture_layers="):
        DependencyHead.from_pretrained(tmp_path / "head", denoiser=other)


def test_the_manifest_holds_the_exported_weights_metrics_as_eval_predictor_measures_them(harvest, tmp_path):
    """The exported head's manifest `metrics` are those of the checkpoint it exports (they were the
    last epoch's), and `val/precision_at_k` counts states with ≥ k pairs only, as `eval predictor`
    does (RetrievalPrecision divides by k, so a state with 2 pairs scored at most 2 / 5). The
    attention-reading head is also scored by `eval predictor` (it was called without attention)."""
    from depmask.commands.eval_predictor import eval_predictor

    fit(harvest, tmp_path, "--trainer.max_epochs", "3", "--trainer.logger", "false", "--checkpoint.mode", "max",
        "--model.use_attention", "true", "--model.precision_k", "3")
    manifest = DependencyHead.from_pretrained(tmp_path / "head").training_manifest
    saved = torch.load(manifest["checkpoint"], weights_only=False)
    assert manifest["metrics_step"] == saved["global_step"] < torch.load(tmp_path / "run" / "last.ckpt",
                                                                         weights_only=False)["global_step"]
    assert manifest["metrics"]["val/loss"] == pytest.approx(manifest["best_score"])
    rows = {r["score"]: r for r in eval_predictor(str(harvest), head=str(tmp_path / "head"), split="val",
                                                  val_fraction=0.3, k=3, output=str(tmp_path / "pred"))}
    assert manifest["metrics"]["val/auroc"] == pytest.approx(rows["head"]["auroc"], abs=1e-5)
    assert manifest["metrics"]["val/precision_at_k"] == pytest.approx(rows["head"]["precision_at_k"], abs=1e-5)
    # validating every other epoch, the checkpoint is saved at validation end, before any module
    # hook of that name runs: the metrics are recorded at epoch end, before it
    shutil.rmtree(tmp_path / "run")
    fit(harvest, tmp_path, "--trainer.max_epochs", "4", "--trainer.logger", "false", "--checkpoint.mode", "max",
        "--trainer.check_val_every_n_epoch", "2")
    manifest = DependencyHead.from_pretrained(tmp_path / "head").training_manifest
    assert manifest["metrics_step"] == torch.load(manifest["checkpoint"], weights_only=False)["global_step"]
    assert manifest["metrics"]["val/loss"] == pytest.approx(manifest["best_score"], rel=1e-5)


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


def test_default_logger_is_wandb_offline_with_the_head_artifact(harvest, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    import wandb

    try:
        fit(harvest, tmp_path, "--trainer.max_steps", "2", "--trainer.logger.init_args.save_dir", str(tmp_path))
    finally:
        wandb.finish()  # a live run would be reused by the next WandbLogger in this process
    assert os.environ["WANDB_MODE"] == "offline"
    assert list(tmp_path.rglob("offline-run-*")), "no offline wandb run written"
    assert list(tmp_path.rglob("*.wandb"))


def test_corrupted_or_mismatched_harvest_fails_before_training(harvest, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(harvest, broken)
    shard = sorted((broken / "shards").glob("*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(HarvestError, match=shard.name):
        HeadDataModule(str(broken))
    foreign = tmp_path / "foreign"
    shutil.copytree(harvest, foreign)
    info = write_shard(foreign, records_to_table([record("z", 0, 3, fp="other@local:1")], 6), ["z"], "other@local:1")
    with pytest.raises(HarvestError, match=info.name):
        HeadDataModule(str(foreign))
    with pytest.raises(HarvestError, match="not a harvest directory"):
        HeadDataModule(str(tmp_path))
    # its record damaged: a bare JSON error naming no file, a KeyError traceback without hidden_size
    record_file = broken / "harvest.json"
    text = (harvest / "harvest.json").read_text()
    record_file.write_text(text[:100])
    with pytest.raises(HarvestError, match=r"harvest.json is unreadable \(JSONDecodeError.*harvest verify"):
        HeadDataModule(str(broken))
    record_file.write_text(json.dumps({k: v for k, v in json.loads(text).items() if k != "hidden_size"}))
    with pytest.raises(HarvestError, match=r"harvest.json lacks hidden_size"):
        HeadDataModule(str(broken))


def test_every_train_yaml_parses(capsys):
    for path in sorted((ROOT / "configs" / "train").glob("*.yaml")):
        with pytest.raises(SystemExit) as e:
            main(["train", "fit", "--config", str(path), "--print_config"])
        assert e.value.code in (0, None)
        cfg = yaml.safe_load(capsys.readouterr().out)
        assert cfg["data"]["harvest"] and cfg["model"]["export_dir"] and cfg["checkpoint"]["monitor"] == "val/loss"


@pytest.mark.parametrize("command", [["train", "fit", "--config", str(CONFIG)], ["mdlm", "fit"]])
def test_the_console_script_parses_without_lightnings_args_warning(command, monkeypatch, recwarn, capsys):
    """`depmask train fit ...` hands LightningCLI the arguments that `sys.argv` also holds; Lightning
    would warn about it on every run. The warning is ours to silence, and sys.argv stays intact
    (Lightning's DDP launcher re-runs it)."""
    argv = ["depmask", *command, "--print_config"]
    monkeypatch.setattr("sys.argv", list(argv))
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
    import sys

    assert sys.argv == argv


def test_train_head_takes_its_architecture_from_a_train_config(harvest, tmp_path):
    from depmask.predictor.io import ARCHITECTURE_KEYS, OPTIONAL_ARCHITECTURE_KEYS
    from depmask.train.head_fit import module_kwargs, train_head

    kwargs = module_kwargs(CONFIG)
    assert "export_dir" not in kwargs and kwargs["dim"] == 32 and kwargs["tv_weight"] == 10.0
    out, metrics = train_head(harvest, tmp_path / "head", epochs=1, val_fraction=0.3, progress=False, **kwargs)
    head = DependencyHead.from_pretrained(out)
    saved = yaml.safe_load(CONFIG.read_text())["model"]
    for key in [*ARCHITECTURE_KEYS, *OPTIONAL_ARCHITECTURE_KEYS]:
        if key in saved:
            assert head.config[key] == saved[key], key
    assert 0 <= metrics["val/auroc"] <= 1


def test_train_head_without_a_config_keeps_the_class_default_width(harvest, tmp_path):
    from depmask.train.head_fit import train_head

    out, _ = train_head(harvest, tmp_path / "head", epochs=1, val_fraction=0.3, progress=False)
    assert DependencyHead.from_pretrained(out).config["dim"] == 128


def test_bad_head_configs_are_named(tmp_path):
    from depmask.train.head_fit import module_kwargs, train_head

    with pytest.raises(ValueError, match="is not a file"):
        module_kwargs(tmp_path / "missing.yaml")
    (tmp_path / "none.yaml").write_text("trainer: {max_epochs: 1}\n")
    with pytest.raises(ValueError, match="no `model:` mapping"):
        module_kwargs(tmp_path / "none.yaml")
    (tmp_path / "typo.yaml").write_text("model: {dim: 32, widht: 3}\n")
    with pytest.raises(ValueError, match=r"unknown `model` keys \['widht'\]"):
        module_kwargs(tmp_path / "typo.yaml")
    with pytest.raises(ValueError, match="hidden_size"):
        train_head(tmp_path, tmp_path / "head", hidden_size=7)



@pytest.mark.parametrize(("kwargs", "message"), [({"lr": -1.0}, r"`lr` \(-1.0\) must be > 0"),
                                                 ({"warmup_steps": -5}, r"`warmup_steps` \(-5\) must be >= 0"),
                                                 ({"precision_k": 0}, r"`precision_k` \(0\) must be >= 1"),
                                                 # NaN passed `value < 0` and made every loss NaN
                                                 ({"tv_weight": float("nan")}, r"`tv_weight` \(nan\) must be a finite"),
                                                 ({"prefix_weight": float("inf")}, r"`prefix_weight` \(inf\) must be a finite"),
                                                 ({"weight_decay": float("nan")}, r"`weight_decay` \(nan\) must be a finite"),
                                                 ({"weight_decay": -0.1}, r"`weight_decay` \(-0.1\) must be a finite number >= 0")])
def test_bad_optimiser_settings_are_named(kwargs, message):
    from depmask.train.head_module import HeadModule

    with pytest.raises(ValueError, match=message):
        HeadModule(hidden_size=8, dim=8, heads=2, layers=0, **kwargs)


def test_no_training_states_is_named(harvest):
    with pytest.raises(ValueError, match=r"`max_train_states` \(0\) must be >= 1, or None for all"):
        HeadDataModule(str(harvest), max_train_states=0)
    with pytest.raises(ValueError, match=r"`num_workers` \(-1\) must be >= 0"):
        HeadDataModule(str(harvest), num_workers=-1)


def test_the_default_run_directory_is_unique_to_the_process(capsys):
    """Two runs started in the same second must not share checkpoints (each would load the other's
    best checkpoint at export): the default `checkpoint.dirpath` carries the process id."""
    with pytest.raises(SystemExit):
        main(["train", "fit", "--config", str(CONFIG), "--print_config"])
    dirpath = yaml.safe_load(capsys.readouterr().out)["checkpoint"]["dirpath"]
    assert dirpath.startswith("runs/head/") and dirpath.endswith(f"-{os.getpid()}")


def test_the_export_holds_the_config_of_its_weights_and_a_moved_run_resumes_in_its_new_place(harvest, tmp_path):
    """`train_config.yaml` was written into the export folder when a run started: a killed fit, or
    `train validate`, left a config beside weights it did not make. A run directory moved and
    resumed from there lost its `last.ckpt` (the resumed epochs went to `last-v1.ckpt`) and the
    epochs before the move no longer competed for the exported best."""
    # `mode: max` on the falling val loss: the best checkpoint is the first epoch's, before the move
    fit(harvest, tmp_path, "--trainer.max_epochs", "2", "--trainer.logger", "false", "--checkpoint.mode", "max")
    head = tmp_path / "head"
    before = (head / "train_config.yaml").read_text()
    main(["train", "validate", "--config", str(CONFIG), *FAST, "--data.harvest", str(harvest), "--model.dim", "16",
          "--model.export_dir", str(head), "--trainer.logger", "false", "--checkpoint.dirpath", str(tmp_path / "v")])
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


@pytest.mark.parametrize("flag", ["--checkpoint.monitor", "--early_stopping.monitor"])
def test_a_monitor_that_names_no_logged_metric_is_refused_before_training(harvest, tmp_path, flag):
    # Lightning's own check ran after the first epoch's training
    with pytest.raises(ValueError, match=r"`monitor` \('val/aurco'\) of (RunCheckpoint|EarlyStopping) is not a metric"
                                         r" the head logs; expected one of .*val/auroc"):
        fit(harvest, tmp_path, "--trainer.max_epochs", "1", "--trainer.logger", "false", flag, "val/aurco")
    assert not list(tmp_path.rglob("*.ckpt"))  # no step was trained


def test_lightnings_own_step_and_epoch_monitors_are_accepted(harvest, tmp_path):
    fit(harvest, tmp_path, "--trainer.max_steps", "1", "--trainer.logger", "false", "--checkpoint.monitor", "step",
        "--checkpoint.mode", "max")
    assert list((tmp_path / "run").glob("head-step=*.ckpt"))


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


def test_a_train_state_cap_takes_whole_examples_of_every_task(harvest):
    """The first N states in table order dropped whole tasks (a harvest is stored task by task)
    and cut the last example part-way."""
    full = HeadDataModule(str(harvest), val_fraction=0.3)
    capped = HeadDataModule(str(harvest), val_fraction=0.3, max_train_states=len(full.train_idx) // 2)
    ids = full.data["example_id"]
    tasks = [e.split(":")[0] for e in ids]
    assert {tasks[i] for i in capped.train_idx} == {tasks[i] for i in full.train_idx} == {"sudoku4", "permutation"}
    assert len(capped.train_idx) <= len(full.train_idx) // 2 and set(capped.train_idx) <= set(full.train_idx)
    per_example = {e: sum(ids[i] == e for i in full.train_idx) for e in capped.train_examples}
    assert all(sum(ids[i] == e for i in capped.train_idx) == n for e, n in per_example.items())  # whole examples
    again = HeadDataModule(str(harvest), val_fraction=0.3, max_train_states=len(full.train_idx) // 2)
    assert again.train_idx == capped.train_idx  # seeded


def test_an_undefined_metric_is_null_in_the_manifest_not_a_failed_export(harvest, tmp_path):
    """`precision_k` above every state's pair count made `val/precision_at_k` NaN, and the export
    failed after the whole fit (JSON has no NaN)."""
    fit(harvest, tmp_path, "--trainer.max_epochs", "1", "--trainer.logger", "false", "--model.precision_k", "100000")
    head = DependencyHead.from_pretrained(tmp_path / "head")
    assert head.training_manifest["metrics"]["val/precision_at_k"] is None


def test_an_endless_fit_is_named_before_it_starts(harvest, tmp_path):
    with pytest.raises(ValueError, match=r"bound it with `--trainer.max_steps` or `--trainer.max_epochs`"):
        fit(harvest, tmp_path, "--trainer.max_epochs", "-1", "--trainer.max_steps", "-1", "--trainer.logger", "false")


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
