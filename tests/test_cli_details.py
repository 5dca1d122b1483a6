"""The command-line glue in detail: preset and prompt rewriting, routing, exit codes, and the defaults
the Lightning commands give a user who sets nothing (read from `--print_config`, no fit run)."""

import os
import subprocess
import sys

import pytest
import yaml

from depmask.cli import (
    _config_policy_names,
    _policy_names,
    _prompt_texts,
    _resolve_policy,
    entry,
    main,
)
from tests.conftest import ROOT


def test_policy_values_that_are_no_preset_name_pass_through_unchanged():
    """A class name, an inline YAML policy, the next flag and a trailing `--policy` are jsonargparse's
    to read or name; only preset names are rewritten, in both flag spellings and for `--policy.help`."""
    assert _resolve_policy("Threshold") == "Threshold"
    for argv in (["decode", "--policy", "--help"], ["decode", "--policy", "{class_path: Threshold}"],
                 ["decode", "--policy={class_path: Threshold, init_args: {threshold: 0.5}}"], ["decode", "--policy"],
                 ["decode", "--policy.help"]):
        assert _policy_names(argv) == argv
    assert _policy_names(["decode", "--policy.help=threshold"]) == ["decode", "--policy.help=Threshold"]


def test_a_config_flag_without_a_readable_config_is_left_to_jsonargparse(tmp_path):
    """A trailing `--config` and a config file that is not YAML go on as written (jsonargparse names
    them), rather than failing in the preset rewriting with an IndexError or a bare YAML error."""
    assert _config_policy_names(["decode", "--config"]) == ["decode", "--config"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: [threshold\nmodel: {\n")
    assert _config_policy_names(["decode", "--config", str(bad)]) == ["decode", "--config", str(bad)]
    with pytest.raises(SystemExit) as done:
        main(["decode", "--config", str(bad)])
    assert done.value.code == 2


def test_a_rewritten_config_copy_is_removed_when_the_process_exits(tmp_path):
    """A decode config naming its policy by preset is handed on as a temporary copy, removed at exit."""
    config = tmp_path / "c.yaml"
    config.write_text("policy: threshold\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = ("import sys; from depmask.cli import _config_policy_names; "
            f"out = _config_policy_names(['decode', '--config', {str(config)!r}]); print(out[2]); "
            "print(open(out[2]).read())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    copy, *text = done.stdout.splitlines()
    assert copy.startswith(str(tmp)) and yaml.safe_load("\n".join(text)) == {"policy": "Threshold"}
    assert not list(tmp.glob("depmask-decode-*"))  # removed at exit


def test_a_prompt_after_an_equals_sign_is_taken_as_text_and_a_list_after_a_space_as_a_list():
    assert _prompt_texts(["decode", "--prompt=- 3 1 2"]) == ["decode", '--prompt=["- 3 1 2"]']
    assert _prompt_texts(["decode", "--prompt=null"]) == ["decode", '--prompt=["null"]']
    assert _prompt_texts(["decode", "--prompt", '["a", "b"]']) == ["decode", "--prompt", '["a", "b"]']
    assert _prompt_texts(["decode", "--prompt", ' ["a"]']) == ["decode", "--prompt", ' ["a"]']
    assert _prompt_texts(["decode", "--prompt=[\"a\"]"]) == ["decode", "--prompt=[\"a\"]"]


def test_harvest_verify_takes_its_directory_positionally_and_exits_1_not_130(tmp_path, capsys):
    """`depmask harvest verify DIR` of a damaged harvest exits with status 1: not routed to the harvest
    run, and not taken for a Lightning fit that was interrupted (status 130)."""
    with pytest.raises(SystemExit) as done:
        main(["harvest", "verify", str(tmp_path)])
    assert done.value.code == 1
    captured = capsys.readouterr()
    assert "harvest.json: missing" in captured.out and "interrupted" not in captured.err


def test_a_groups_private_key_is_no_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["tasks", "_help"])
    assert done.value.code == 2 and "invalid choice: '_help'" in capsys.readouterr().err


def test_a_group_commands_help_keeps_its_description_on_one_line(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["eval", "predictor", "--help"])
    line = "Score the head and the baselines against the empirical TV influence on held-out states."
    assert line in capsys.readouterr().out.splitlines()


@pytest.fixture
def failing_command(monkeypatch):
    """`depmask tasks show x` raising the given exception, run through the console script."""
    import depmask.cli

    def run(exc):
        def fail(name: str = ""):
            raise exc

        monkeypatch.setitem(depmask.cli.COMMANDS["tasks"], "show", fail)
        monkeypatch.setattr(sys, "argv", ["depmask", "tasks", "show", "x"])
        entry()

    return run


@pytest.mark.parametrize("exc", [ValueError("`x` (1) is bad"), FileNotFoundError("no such file: y")])
@pytest.mark.parametrize("env", [None, "0", ""])
def test_the_console_script_ends_a_refusal_or_missing_file_with_status_2(failing_command, monkeypatch, capsys, exc, env):
    """A refused value or a missing file is one line and status 2; `DEPMASK_TRACEBACK` unset, empty or
    `0` keeps it so."""
    if env is None:
        monkeypatch.delenv("DEPMASK_TRACEBACK", raising=False)
    else:
        monkeypatch.setenv("DEPMASK_TRACEBACK", env)
    with pytest.raises(SystemExit) as done:
        failing_command(exc)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"depmask: error: {exc}\n") and "DEPMASK_TRACEBACK=1" in err


def test_depmask_traceback_1_lets_the_error_through(failing_command, monkeypatch):
    monkeypatch.setenv("DEPMASK_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError):
        failing_command(FileNotFoundError("no such file: y"))


def _printed(argv, capsys) -> dict:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_train_fit_defaults_without_a_config(capsys):
    """What `depmask train fit` gives a user whose config leaves these out: best and early stopping on
    val AUROC (higher is better), patience 5 checked after validation, seed 0, an offline-able wandb
    logger of the project, and the harvest's figures linked in (so no `model.*` flag for them)."""
    cfg = _printed(["train", "fit"], capsys)
    ck, es = cfg["checkpoint"], cfg["early_stopping"]
    assert (ck["monitor"], ck["mode"], ck["filename"], ck["save_last"]) == ("val/auroc", "max", "head-{step}", True)
    assert (es["monitor"], es["mode"], es["patience"], es["check_on_train_epoch_end"]) == ("val/auroc", "max", 5, False)
    assert cfg["seed_everything"] == 0
    logger = cfg["trainer"]["logger"]
    assert logger["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    assert {k: logger["init_args"][k] for k in ("save_dir", "project", "name")} == {
        "save_dir": "runs", "project": "depmask", "name": "dependency-head"}
    assert cfg["trainer"]["default_root_dir"] == "runs/head"
    linked = {"hidden_size", "base_fingerprint", "training_manifest"}
    assert not linked & set(cfg["model"]), "linked from the data module, not set by hand"


def test_mdlm_fit_defaults_without_a_config(capsys):
    cfg = _printed(["mdlm", "fit"], capsys)
    assert cfg["seed_everything"] == 0 and cfg["trainer"]["default_root_dir"] == "runs/mdlm"
    logger = cfg["trainer"]["logger"]
    assert logger["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    assert {k: logger["init_args"][k] for k in ("save_dir", "project", "name")} == {
        "save_dir": "runs", "project": "depmask", "name": "tiny-mdlm"}


def test_harvest_defaults_and_routing(capsys):
    """`depmask harvest ...` goes to the harvest's parser whatever follows it; its trainer logs nothing,
    saves no checkpoint and runs on one device unless told otherwise."""
    cfg = _printed(["harvest"], capsys)
    assert "harvest" in cfg
    trainer = cfg["trainer"]
    assert {k: trainer[k] for k in ("logger", "enable_checkpointing", "enable_progress_bar", "enable_model_summary",
                                    "accelerator", "devices")} == {
        "logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
        "accelerator": "auto", "devices": 1}
    again = _printed(["harvest", "--config", str(ROOT / "configs/harvest/tiny-tasks.yaml")], capsys)
    assert again["harvest"]["tasks"]


@pytest.mark.parametrize(("env", "mode"), [({}, "offline"), ({"WANDB_API_KEY": "k"}, None),
                                           ({"WANDB_API_KEY": ""}, "offline"), ({"WANDB_MODE": "online"}, "online")])
def test_wandb_is_offline_only_without_a_mode_or_a_key(monkeypatch, env, mode):
    from depmask.train.cli import wandb_offline_by_default

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    wandb_offline_by_default()
    assert os.environ.get("WANDB_MODE") == mode


SUMMARY = {"world_size": 1, "states": 12, "examples": 4, "seconds": 2.04, "states_per_s": 5.882, "pairs_per_s": 99.6,
           "forwards": 30, "probe_forwards": 20, "skipped_examples": 1, "total_rows": 15, "total_examples": 5,
           "expected_examples": 6, "shards": 2}


def test_the_harvest_summary_lines(capsys, tmp_path):
    from depmask.train.harvest_cli import _print_summary

    _print_summary(dict(SUMMARY), tmp_path)
    first, second, last = capsys.readouterr().out.splitlines()
    assert first == ("harvest: 12 states from 4 examples in 2.0 s (5.9 states/s, 100 influence pairs/s; "
                     "30 forwards, 20 of them perturbed); 1 examples already done")
    assert second == f"harvest: {tmp_path} holds 15 states of 5/6 examples in 2 shards"
    import json

    assert json.loads(last)["states_per_s"] == 5.882
    _print_summary({**SUMMARY, "world_size": 2}, tmp_path)
    assert capsys.readouterr().out.startswith("harvest (rank 0 of 2): 12 states")


def test_the_config_handed_to_the_module_keeps_its_nulls():
    """`train_config.yaml` beside the exported weights holds every setting, a null that overrides a
    non-null default included (dropped, the file would describe another run)."""
    from types import SimpleNamespace

    from jsonargparse import ArgumentParser

    from depmask.train.cli import HandConfigToModule

    parser = ArgumentParser()
    parser.add_argument("--teacher", type=str | None, default="a-head")
    parser.add_argument("--dim", type=int, default=8)
    module = SimpleNamespace()
    HandConfigToModule(parser, parser.parse_args(["--teacher", "null"])).save_config(None, module, "fit")
    assert yaml.safe_load(module.train_config_text) == {"teacher": None, "dim": 8}
