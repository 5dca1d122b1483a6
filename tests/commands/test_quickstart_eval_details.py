"""What `depmask quickstart` and `depmask eval decode` decide themselves, with the costly stages
stubbed or the model load refused. For the quickstart: the settings it records and the changes it
refuses, which stages it reruns or reuses, what the head's training and the decoding get, the GPU
trainer, where the shipped files are found. For `eval decode`: its checks before the model loads,
the settings the model loads with, the held-out decode's settings, the files a run removes, the
bootstrap and plot arguments, and the wandb run's mode, directory and config."""

import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import depmask.commands.eval_decode as eval_decode_module
import depmask.commands.quickstart as quickstart_module
from depmask.cli import main
from depmask.commands.eval_decode import eval_decode
from depmask.commands.quickstart import (
    check_head_kwargs,
    check_settings,
    embedded_model_path,
    metric_text,
    quickstart,
    shipped_head_config,
)
from depmask.models import HFDenoiser
from depmask.train.head_fit import module_kwargs
from tests.conftest import EMBEDDED, ROOT
from tests.eval.decode_args import SMALL

# --- quickstart ---------------------------------------------------------------------------------

ROWS = [{"task": "sort", "policy": "low_confidence", "accuracy": 1.0, "nfe": 8.0, "tpf": 1.0, "n": 2}]
POLICIES = ["low_confidence", "threshold", "entropy_bound", "factor", "dilated", "clad", "demask", "oracle"]


@pytest.fixture
def stages(monkeypatch):
    """Every quickstart stage stubbed (a harvest verifies once its `done` marker is there); the
    returned dict records what each stage was given."""
    from depmask.data_gen import verify
    from depmask.eval import runner
    from depmask.train import harvest, head_fit

    calls = {"harvest": [], "head": [], "load": [], "decode": [], "plot": []}

    def run_harvest(cfg, trainer):
        calls["harvest"].append((cfg, trainer))
        Path(cfg.output).mkdir(parents=True, exist_ok=True)
        (Path(cfg.output) / "done").write_text("")

    def train_head(harvest_dir, head_dir, **kwargs):
        calls["head"].append(kwargs)
        Path(head_dir).mkdir(parents=True, exist_ok=True)
        (Path(head_dir) / "config.json").write_text("{}")
        return Path(head_dir), {"val/auroc": 0.9}

    def run_decode_eval(den, tasks, policies, out, **kwargs):
        calls["decode"].append({"tasks": tasks, "policies": policies, "out": out, **kwargs})
        return [dict(r) for r in ROWS]

    monkeypatch.setattr(harvest, "run_harvest", run_harvest)
    monkeypatch.setattr(verify, "verify_harvest", lambda path: SimpleNamespace(ok=(Path(path) / "done").is_file()))
    monkeypatch.setattr(head_fit, "train_head", train_head)
    monkeypatch.setattr(HFDenoiser, "from_pretrained", lambda path, **kw: calls["load"].append((path, kw)) or "den")
    monkeypatch.setattr(runner, "run_decode_eval", run_decode_eval)
    monkeypatch.setattr(quickstart_module, "table", lambda rows: "TABLE OF RUNS")
    monkeypatch.setattr(quickstart_module, "headline_report", lambda rows: ([{"headline": len(rows)}], "HEADLINE TEXT"))
    monkeypatch.setattr(quickstart_module, "plot_frontier", lambda rows, path: calls["plot"].append(path))
    return calls


def _qs(tmp_path, **kwargs):
    return quickstart(**{"out_dir": str(tmp_path / "qs"), "tasks": ["sort"], "n": 2, **kwargs})


def test_quickstart_records_the_harvest_and_head_settings_and_refuses_each_change(tmp_path, stages, monkeypatch):
    monkeypatch.chdir(ROOT)  # the model given relative to the working directory is recorded resolved
    _qs(tmp_path, model="models/tiny-tasks", seed=3, states_per_example=2)
    record = tmp_path / "qs" / "quickstart.json"
    assert json.loads(record.read_text()) == {
        "model": str(EMBEDDED.resolve()), "tasks": ["sort"], "harvest_examples": 150, "states_per_example": 2,
        "seed": 3, "head_epochs": 20, "head": module_kwargs(shipped_head_config())}
    _qs(tmp_path, model=str(EMBEDDED), seed=3, states_per_example=2)  # the same model, spelled otherwise
    other = tmp_path / "other-model"
    other.mkdir()
    shutil.copy(EMBEDDED / "config.json", other / "config.json")
    before = record.read_bytes()
    for change, named in (({"seed": 4}, r"seed: 3 → 4"), ({"states_per_example": 3}, r"states_per_example: 2 → 3"),
                          ({"tasks": ["sudoku4"]}, r"tasks: \['sort'\] → \['sudoku4'\]"),
                          ({"model": str(other)}, r"model: '.*tiny-tasks' → '.*other-model'")):
        with pytest.raises(ValueError, match=rf"other settings \({named}\)"):
            _qs(tmp_path, **{"seed": 3, "states_per_example": 2, **change})
    assert record.read_bytes() == before and len(stages["harvest"]) == 1


def test_check_settings_names_only_the_head_keys_that_differ(tmp_path):
    (tmp_path / "quickstart.json").write_text(json.dumps({"seed": 0, "head": {"dim": 32, "layers": 0}}))
    check_settings(tmp_path, {"seed": 0, "head": {"dim": 32, "layers": 0}})  # the same settings: accepted
    with pytest.raises(ValueError, match=r"other settings \(head\.layers: 0 → 1; head\.loss: None → 'mse'\); its"):
        check_settings(tmp_path, {"seed": 0, "head": {"dim": 32, "layers": 1, "loss": "mse"}})


def test_a_failed_harvest_leaves_no_record_and_speaks_in_quickstarts_names(tmp_path, stages, monkeypatch):
    from depmask.train import harvest

    def refuse(cfg, trainer):
        raise ValueError("`examples_per_task` (150) differs from the harvest at `output`; give another `--output`")

    monkeypatch.setattr(harvest, "run_harvest", refuse)
    with pytest.raises(ValueError) as err:
        _qs(tmp_path)
    assert str(err.value) == "`harvest_examples` (150) differs from the harvest at `out_dir`; give another `--out_dir`"
    # no record: the corrected command is not refused as "other settings"
    assert not (tmp_path / "qs" / "quickstart.json").exists()


def test_the_harvest_runs_again_unless_it_verifies_and_is_recorded(tmp_path, stages):
    _qs(tmp_path)
    assert len(stages["harvest"]) == 1 and stages["harvest"][0][1] == {"accelerator": "cpu"}
    _qs(tmp_path)  # verified and recorded: reused
    assert len(stages["harvest"]) == 1
    (tmp_path / "qs" / "harvest" / "done").unlink()  # recorded, but incomplete: resumed
    _qs(tmp_path)
    assert len(stages["harvest"]) == 2
    # complete but unrecorded (not this command's): the harvest itself compares its settings
    (tmp_path / "qs" / "quickstart.json").unlink()
    _qs(tmp_path)
    assert len(stages["harvest"]) == 3 and (tmp_path / "qs" / "quickstart.json").is_file()


@pytest.mark.parametrize(("device", "devices"), [(torch.device("cuda"), [0]), (torch.device("cuda", 1), [1])])
def test_a_cuda_device_harvests_on_that_gpu(tmp_path, stages, monkeypatch, device, devices):
    from depmask.models import hf_denoiser

    monkeypatch.setattr(hf_denoiser, "check_device", lambda d: device)
    _qs(tmp_path, device=str(device))
    assert stages["harvest"][0][1] == {"accelerator": "gpu", "devices": devices}
    assert stages["load"][0][1] == {"device": device}


def test_the_head_trains_with_the_runs_epochs_seed_and_config_until_its_export_is_complete(tmp_path, stages, capsys):
    config = tmp_path / "head.yaml"
    config.write_text("model:\n  dim: 16\n  layers: 0\n")
    args = {"head_epochs": 2, "seed": 5, "head_config": str(config)}
    _qs(tmp_path, **args)
    assert stages["head"] == [{"epochs": 2, "seed": 5, "dim": 16, "layers": 0}]
    assert "head: val/auroc 0.900" in capsys.readouterr().out
    _qs(tmp_path, **args)  # exported: reused
    assert len(stages["head"]) == 1
    (tmp_path / "qs" / "head" / "config.json").unlink()  # the export writes it last: an interrupted one
    _qs(tmp_path, **args)
    assert len(stages["head"]) == 2


def test_the_decode_stage_gets_the_runs_items_and_seed_and_its_rows_are_written_and_returned(tmp_path, stages, capsys):
    out = tmp_path / "qs"
    rows = _qs(tmp_path, n=3, seed=7)
    (call,) = stages["decode"]
    assert call["tasks"] == ["sort"] and call["n"] == 3 and call["seed"] == 7 and call["out"] == out / "eval"
    assert [p.name for p in call["policies"]] == POLICIES
    assert next(p for p in call["policies"] if p.name == "demask").knobs == {"head": str(out / "head")}
    assert rows == ROWS
    assert json.loads((out / "summary.json").read_text()) == ROWS
    assert json.loads((out / "headline.json").read_text()) == [{"headline": 1}]
    assert stages["plot"] == [out / "frontier.png"]
    printed = capsys.readouterr().out
    assert "TABLE OF RUNS" in printed and "HEADLINE TEXT" in printed


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": True}, r"`n` \(True\) must be an int >= 1 \(held-out test items per task\)"),
    ({"head_epochs": True}, r"`head_epochs` \(True\) must be an int >= 1"),
    # the decoding stage's own check: the harvest would take these too
    ({"tasks": ["nope"]}, r"unknown task 'nope'"),
    ({"tasks": ["sort", "sort"]}, r"names \['sort'\] more than once"),
])
def test_quickstart_refuses_a_bool_count_or_a_bad_task_before_the_harvest(tmp_path, stages, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _qs(tmp_path, **kwargs)
    assert not stages["harvest"]


def test_quickstart_refuses_a_model_directory_without_a_config(tmp_path, stages):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"`model` \('.*empty'\) is not a local model directory with a config.json"):
        _qs(tmp_path, model=str(tmp_path / "empty"))


def test_a_head_config_value_of_the_wrong_type_is_named_with_the_config_file():
    # HeadModule compares `lr` with a number: a TypeError, reported as the config's fault
    with pytest.raises(ValueError, match=r"`head_config` \(\S*configs/train/head-tiny\.yaml\): .*not supported"):
        check_head_kwargs({"lr": "fast"}, None)


def test_metric_text_lists_the_metrics_by_name():
    assert metric_text({"val/loss": 0.5, "val/auroc": 0.9}) == "val/auroc 0.900, val/loss 0.500"


def test_shipped_files_come_from_the_working_directory_when_there_else_from_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert embedded_model_path() == ROOT / "models" / "tiny-tasks"
    assert shipped_head_config() == ROOT / "configs" / "train" / "head-tiny.yaml"
    (tmp_path / "models" / "tiny-tasks").mkdir(parents=True)  # a folder without the model's config: not it
    assert embedded_model_path() == ROOT / "models" / "tiny-tasks"
    (tmp_path / "models" / "tiny-tasks" / "config.json").write_text("{}")
    (tmp_path / "configs" / "train").mkdir(parents=True)
    (tmp_path / "configs" / "train" / "head-tiny.yaml").write_text("model: {}\n")
    assert embedded_model_path() == Path("models/tiny-tasks")
    assert shipped_head_config() == Path("configs/train/head-tiny.yaml")


# --- eval decode --------------------------------------------------------------------------------


class Loaded(Exception):
    """Raised in place of loading the model: every check before the load passed."""


@pytest.fixture
def no_load(monkeypatch):
    loads = []

    def refuse(**kwargs):
        loads.append(kwargs)
        raise Loaded

    monkeypatch.setattr(HFDenoiser, "from_pretrained", refuse)
    return loads


def _eval(tmp_path, *args):
    return main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), *args])


@pytest.mark.parametrize("args", [["--windows", "[1, 0]"], ["--select_seed", "0"], ["--policies", "[{name: threshold}]"]],
                         ids=["windows-at-the-bounds", "select_seed-without-select_n", "no-reference-without-select_n"])
def test_eval_decode_accepts_settings_at_their_documented_edges(tmp_path, no_load, args):
    with pytest.raises(Loaded):
        _eval(tmp_path, *args)


@pytest.mark.parametrize(("args", "message"), [
    (["--bootstrap", "-1"], r"`bootstrap` \(-1\) must be >= 0"),
    (["--windows", "[]"], r"`windows` is empty"),
    (["--select_seed", "-3"], r"`select_seed` \(-3\) must be an int"),  # checked with no held-out draw too
])
def test_eval_decode_refuses_before_the_model_loads(tmp_path, no_load, args, message):
    with pytest.raises(ValueError, match=message):
        _eval(tmp_path, *args)
    assert not no_load


def test_eval_decode_refuses_a_bool_select_n(tmp_path, no_load):
    with pytest.raises(ValueError, match=r"`select_n` \(True\) must be an int >= 0"):
        eval_decode(tasks=["sort"], n=4, output=str(tmp_path / "ev"), select_n=True)


def test_eval_decode_loads_the_model_with_every_model_setting(tmp_path, no_load):
    with pytest.raises(Loaded):
        _eval(tmp_path, "--model.device", "cpu", "--model.dtype", "float32")
    assert no_load == [{"path": str(EMBEDDED), "mask_id": None, "device": "cpu", "dtype": "float32",
                        "logits_shift": None, "capture_layers": None, "trust_remote_code": True,
                        "attn_implementation": None}]


def test_eval_decode_refuses_a_model_without_a_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setattr(HFDenoiser, "from_pretrained", lambda **kw: SimpleNamespace(tokenizer=None))
    with pytest.raises(ValueError, match=r"model '.*tiny-tasks' has no tokenizer files; the tasks need one"):
        _eval(tmp_path)


def test_the_compiler_is_checked_only_when_some_run_compiles(tmp_path, no_load, monkeypatch):
    checked = []
    monkeypatch.setattr(eval_decode_module, "check_compiler", lambda: checked.append(True))
    with pytest.raises(Loaded):  # clad compiles, low_confidence does not: one compiled run is enough
        _eval(tmp_path, "--policies", "[{name: low_confidence}, {name: clad}]", "--compile_select", "aot")
    assert checked == [True]
    with pytest.raises(Loaded):
        _eval(tmp_path)
    assert checked == [True]


RUN = ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "4"]


# the files only some invocations write (README: "A headline, interval or held-out file that an
# invocation does not write ... is removed"), spelled out rather than read from the module
OPTIONAL_OUTPUTS = ["headline.json", "headline_ci.json", "headline_heldout.json", "headline_heldout_ci.json",
                    "select/summary.json"]


def test_a_run_without_low_confidence_removes_every_optional_file_of_an_earlier_one(tmp_path):
    out = tmp_path / "ev"
    for name in OPTIONAL_OUTPUTS:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("[]")
    main([*RUN, "--output", str(out), "--policies", "[{name: threshold, sweep: {threshold: [0.9]}}]"])
    assert [name for name in OPTIONAL_OUTPUTS if (out / name).exists()] == []
    assert [r["policy"] for r in json.loads((out / "summary.json").read_text())] == ["threshold"]


def _fake_wandb(monkeypatch, tmp_path):
    """A stand-in `wandb` module; returns the list of `init` keyword arguments."""
    inits = []
    run = SimpleNamespace(log=lambda data: None, finish=lambda: None)
    fake = SimpleNamespace(Table=lambda columns, data: (columns, data), Image=str,
                           init=lambda **kw: inits.append(kw) or run)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    return inits


@pytest.fixture
def spies(monkeypatch):
    """The real plot, bootstrap and decode, with what each was given recorded (the decode's
    compiled selection is recorded, then run eagerly)."""
    calls = {"plot": [], "intervals": [], "decode": []}
    plot, intervals, decode = (eval_decode_module.plot_frontier, eval_decode_module.headline_intervals,
                               eval_decode_module.run_decode_eval)

    def run_decode_eval(*args, **kwargs):
        calls["decode"].append(kwargs)
        return decode(*args, **{**kwargs, "compile_select": False})

    monkeypatch.setattr(eval_decode_module, "plot_frontier",
                        lambda rows, path, **kw: calls["plot"].append((Path(path).name, kw)) or plot(rows, path, **kw))
    monkeypatch.setattr(eval_decode_module, "headline_intervals",
                        lambda *a, **kw: calls["intervals"].append(kw) or intervals(*a, **kw))
    monkeypatch.setattr(eval_decode_module, "run_decode_eval", run_decode_eval)
    monkeypatch.setattr(eval_decode_module, "check_compiler", lambda: None)
    return calls


def test_the_headline_bootstrap_and_plots_take_the_runs_windows_count_and_seed(tmp_path, spies, monkeypatch):
    out = tmp_path / "ev"
    logged = _fake_wandb(monkeypatch, tmp_path)
    main([*RUN, "--output", str(out), "--seed", "3", "--bootstrap", "20", "--wandb", "true"])
    top = json.loads((out / "headline.json").read_text())
    assert {r["tolerance"] for r in top} == {0.01}  # the default window: 1 point
    assert {r["n_boot"] for r in json.loads((out / "headline_ci.json").read_text())} == {20}
    assert {(kw["n_boot"], kw["seed"]) for kw in spies["intervals"]} == {(20, 3)}
    assert [(name, kw.get("x")) for name, kw in spies["plot"]] == [("frontier.png", None),
                                                                  ("frontier-pooled.png", "tpf_pooled")]
    # a key, no mode: wandb decides (online), the run goes to WANDB_DIR, its config has the settings
    (init,) = logged
    assert "WANDB_MODE" not in os.environ and init["dir"] == str(tmp_path / "wandb-dir")
    assert init["config"]["seed"] == 3 and init["config"]["select_seed"] == 4 and init["config"]["bootstrap"] == 20
    main([*RUN, "--output", str(out), "--windows", "[0.02]", "--bootstrap", "0"])
    assert [kw["windows"] for _, kw in spies["plot"][2:]] == [[0.02], [0.02]]


def test_the_held_out_decode_takes_the_runs_decoding_settings(tmp_path, spies):
    out = tmp_path / "ev"
    main([*RUN, "--output", str(out), "--seed", "3", "--select_n", "2", "--bootstrap", "0", "--temperature", "0.5",
          "--compile_select", "true", "--policies", "[{name: low_confidence}, {name: threshold}]"])
    evaluation, held_out = spies["decode"]
    assert (evaluation["n"], evaluation["seed"], held_out["n"], held_out["seed"]) == (4, 3, 2, 4)
    for key in ("temperature", "compile_select", "batch_size", "gen_length", "block_length", "steps"):
        assert held_out[key] == evaluation[key], key
    assert held_out["temperature"] == 0.5 and held_out["compile_select"] is True
    # with `--bootstrap 0`, the held-out headline and no intervals of it
    assert (out / "headline_heldout.json").is_file() and not (out / "headline_heldout_ci.json").exists()
