"""The dependency head's training: data split, LightningCLI wiring, export, loggers, resume, errors."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from depmask.cli import main
from depmask.data_gen.dataset import HarvestError
from depmask.data_gen.schema import records_to_table
from depmask.data_gen.shards import write_shard
from depmask.predictor import DependencyHead
from depmask.train.head_data import HeadDataModule, collate_states
from tests.conftest import EMBEDDED, ROOT
from tests.data_gen.records import record
from tests.train.head_cli_run import CONFIG, fit


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


def test_collate_takes_the_hidden_size_from_a_row_with_masked_positions():
    """A state without masked positions stores its hidden states as [0, 0]: first in a batch, it
    set the batch's hidden size to 1, and the next row's [k, d] did not fit."""
    empty = {**vars(record("a", 0, 4)), "state": 0}
    empty.update(positions=np.zeros(0, np.int32), hidden=np.zeros((0, 0), np.float16),
                 confidence=np.zeros(0, np.float32), entropy=np.zeros(0, np.float32), tv=[], attention=[])
    full = {**vars(record("b", 0, 2)), "state": 1}
    d = np.asarray(full["hidden"]).shape[-1]
    for rows in ([empty, full], [full, empty]):
        batch = collate_states(rows)
        assert batch["hidden"].shape == (2, 2, d) and batch["valid"].sum().item() == 2


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


@pytest.mark.parametrize(("kwargs", "message"), [({"lr": -1.0}, r"`lr` \(-1.0\) must be a finite number > 0"),
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
