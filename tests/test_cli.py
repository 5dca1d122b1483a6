"""The command line: every shipped YAML parses, policy names resolve, bad input is named."""

from pathlib import Path

import pytest
from jsonargparse import ActionConfigFile, ArgumentParser

from depmask.cli import _policy_names, main
from depmask.commands.decode import decode
from depmask.decoding.policies import POLICIES, Policy
from tests.conftest import EMBEDDED

ROOT = Path(__file__).resolve().parents[1]


def decode_parser() -> ArgumentParser:
    parser = ArgumentParser()
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(decode)
    return parser


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "decode").glob("*.yaml")), ids=lambda p: p.name)
def test_every_decode_yaml_parses_and_builds_its_policy(path):
    parser = decode_parser()
    cfg = parser.parse_args(["--config", str(path)])
    policy = parser.instantiate_classes(cfg).policy
    assert isinstance(policy, Policy)
    assert policy.name == path.stem  # one YAML per preset, named after it


def test_there_is_a_yaml_for_every_policy():
    shipped = {p.stem for p in (ROOT / "configs" / "decode").glob("*.yaml")}
    assert shipped >= set(POLICIES)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_preset_names_map_to_classes(name):
    args = _policy_names(["decode", "--policy", name, f"--policy={name}"])
    cls = POLICIES[name].__name__
    assert args == ["decode", "--policy", cls, f"--policy={cls}"]
    cfg = decode_parser().parse_args(["--model", "x", "--policy", cls])
    assert cfg.policy.class_path.endswith(cls)


def test_knob_override_from_the_command_line():
    parser = decode_parser()
    cfg = parser.parse_args(_policy_names(["--model", "x", "--policy", "threshold", "--policy.threshold", "0.5"]))
    assert parser.instantiate_classes(cfg).policy.threshold == 0.5


def test_out_of_range_knob_is_named():
    parser = decode_parser()
    cfg = parser.parse_args(_policy_names(["--model", "x", "--policy", "threshold", "--policy.threshold", "1.5"]))
    with pytest.raises(ValueError, match=r"`threshold` \(1.5\) must lie in \(0, 1\]"):
        parser.instantiate_classes(cfg)


def test_unknown_policy_is_refused(capsys):
    from depmask.cli import main

    # a ValueError, which the console script prints as `depmask: error: ...` with status 2 (it was
    # a SystemExit with status 1, as a failed run)
    with pytest.raises(ValueError) as err:
        main(["decode", "--model", "x", "--prompt", "hi", "--policy", "fastest"])
    assert "unknown policy 'fastest'" in str(err.value) and "threshold" in str(err.value)


def test_a_head_scored_policy_without_its_head_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """`--policy demask` with no head failed in `generate`, after the model had loaded (minutes for
    an 8B one); `eval decode` left a lock and a provenance file of the run behind."""
    from depmask.cli import main
    from depmask.models import HFDenoiser

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(HFDenoiser, "from_pretrained", no_load)
    with pytest.raises(ValueError, match=r"the head scorer needs a trained DependencyHead.*`--policy.head DIR`"):
        main(["decode", "--model", str(EMBEDDED), "--prompt", "1 2", "--policy", "demask"])
    with pytest.raises(ValueError, match=r"policy sweep 'demask', run \{\}: the head scorer needs .*knobs: \{head: DIR\}"):
        main(["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "2",
              "--policies", "[{name: demask}]", "--output", str(tmp_path / "ev")])
    assert not (tmp_path / "ev").exists()


def test_top_level_help_lists_every_command_including_the_lightning_ones(capsys):
    from depmask.cli import COMMANDS, main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"    {name} " in out  # every jsonargparse command, with its one-line help
    # the commands main() routes to LightningCLI before jsonargparse sees them
    for line in ("depmask harvest --config FILE", "depmask train fit|validate --config FILE",
                 "depmask mdlm fit|validate --config FILE"):
        assert line in out
    for folder in ("configs/harvest/", "configs/train/", "configs/mdlm/"):
        assert (ROOT / folder).is_dir() and folder in out  # the folders named exist
    # `mdlm --help` lists `evaluate` alone among its subcommands: its description names the others
    with pytest.raises(SystemExit):
        main(["mdlm", "--help"])
    assert "`mdlm fit|validate --config FILE` train or validate one" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", [["eval", "decode"], ["eval", "subadditivity"], ["mdlm", "evaluate"],
                                     ["tasks", "show"]])
def test_a_misspelled_config_key_of_a_group_command_is_named(tmp_path, capsys, command):
    """A command inside a group (`eval decode`, `mdlm evaluate`, ...) was parsed nested in the
    group's parser, and a misspelled config key came out as `error: 'eval'`."""
    from depmask.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("batchsize: 2\n")
    with pytest.raises(SystemExit):
        main([*command, "--config", str(config)])
    err = capsys.readouterr().err
    assert "Option 'batchsize' is not accepted" in err and f"depmask {' '.join(command)} --help" in err


def test_the_top_level_names_and_no_lightning_outside_train():
    """`from depmask import HFDenoiser, build_policy, generate, DependencyHead, get_task` is what a
    script needs; importing depmask must not import Lightning (it lives in `train/` only)."""
    import subprocess
    import sys

    code = ("import sys, depmask; from depmask import HFDenoiser, build_policy, generate, DependencyHead, get_task; "
            "print(sorted(m for m in ('lightning', 'lightning.pytorch', 'datasets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("text", ["- 3 1 2", "null", "12", "a: b", 'say "hi"'])
def test_a_decode_prompt_is_taken_as_written(text, capsys):
    # jsonargparse reads a flag's value as YAML: "- 3 1 2" was the list ["3 1 2"], "null" no prompt
    main(["decode", "--model", str(EMBEDDED), "--prompt", text, "--gen_length", "4", "--block_length", "4"])
    assert capsys.readouterr().out.splitlines()[0] == f">>> {text}"


def test_a_decode_prompt_list_still_gives_several_prompts(capsys):
    main(["decode", "--model", str(EMBEDDED), "--prompt=[\"- 1\", \"2\"]", "--gen_length", "4",
          "--block_length", "4"])
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith(">>>")]
    assert shown == [">>> - 1", ">>> 2"]


def test_an_interrupt_ends_with_one_line_and_status_130(monkeypatch, capsys):
    import depmask.cli

    def interrupted(name: str = ""):
        raise KeyboardInterrupt

    monkeypatch.setitem(depmask.cli.COMMANDS["tasks"], "show", interrupted)
    with pytest.raises(SystemExit) as err:
        main(["tasks", "show", "sudoku4"])
    assert err.value.code == 130
    assert capsys.readouterr().err.startswith("depmask: interrupted")


@pytest.mark.parametrize("group", ["train", "mdlm"])
def test_only_fit_and_validate_are_offered(group, capsys):
    with pytest.raises(SystemExit) as err:
        main([group, "test", "--config", "x.yaml"])
    assert err.value.code == 2 and "test" in capsys.readouterr().err


def test_every_training_option_has_help_text():
    # docstrings that began with "Args:" or grouped names ("lr, weight_decay: ...") gave
    # `train fit --help` / `mdlm fit --help` options with a type and a default only
    import inspect

    import docstring_parser

    from depmask.train.head_data import HeadDataModule
    from depmask.train.head_module import HeadModule
    from depmask.train.mdlm_module import MDLMModule

    for cls in (HeadModule, HeadDataModule, MDLMModule):
        documented = {p.arg_name for p in docstring_parser.parse(cls.__init__.__doc__).params}
        wanted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert documented == wanted, (cls.__name__, wanted - documented, documented - wanted)


@pytest.mark.parametrize("name", ["low_confidence", "threshold"])
def test_a_decode_config_takes_another_gen_length_as_the_signature_does(name, capsys):
    """The configs pinned block_length and steps at 32: `--gen_length 64` decoded two tokens a
    forward with no word, and `--gen_length 16` failed on a block length nobody typed."""
    import json

    for gen in (48, 16):  # (the embedded model takes 64 positions)
        main(["decode", "--config", str(ROOT / "configs" / "decode" / f"{name}.yaml"), "--prompt_ids", "[[5, 6]]",
              "--gen_length", str(gen), "--json_output", "true"])
        out = json.loads(capsys.readouterr().out)
        if name == "low_confidence":
            assert out["nfe"] == gen


def test_an_interrupt_inside_a_lightning_fit_ends_with_status_130_too(monkeypatch, capsys):
    """Lightning catches Ctrl-C in `fit` / `predict` (harvest, training, quickstart's stages) and
    exits with status 1, as a failure would, and without depmask's line."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    import depmask.cli

    class Interrupted(BoringModel):
        def training_step(self, batch, batch_idx):
            raise KeyboardInterrupt

    def fit(name: str = ""):
        L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False).fit(Interrupted())

    monkeypatch.setitem(depmask.cli.COMMANDS["tasks"], "show", fit)
    with pytest.raises(SystemExit) as err:
        main(["tasks", "show", "sudoku4"])
    assert err.value.code == 130 and capsys.readouterr().err.splitlines()[-1].startswith("depmask: interrupted")
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning set it to ignore Ctrl-C


def test_the_console_script_ends_a_refused_argument_with_one_line(tmp_path):
    """A refused value printed a whole traceback before its message."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "depmask.cli", "decode", "--model", str(EMBEDDED), "--prompt_ids", "[[1]]",
           "--gen_length", "0"]
    env = {k: v for k, v in os.environ.items() if k != "DEPMASK_TRACEBACK"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("depmask: error: `gen_length` (0) must be an int >= 1")
    shown = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**env, "DEPMASK_TRACEBACK": "1"})
    assert shown.returncode == 1 and "Traceback" in shown.stderr


def test_decode_takes_the_capture_layers_an_eval_config_names(capsys):
    """`depmask decode` loaded every model with the default capture (the last quarter of the
    layers), so its `clad` on LLaDA averaged layers 24–31 where `eval decode` with the shipped
    model config averages 28–31: the two commands decoded CLAD differently."""
    import json

    import torch

    from depmask.decoding import build_policy, generate
    from depmask.models import HFDenoiser

    with pytest.raises(ValueError, match=r"`capture_layers` \(\[99\]\) must be non-empty indices"):
        main(["decode", "--model", str(EMBEDDED), "--prompt", "3 1 2", "--gen_length", "8", "--policy", "clad",
              "--capture_layers", "[99]"])
    out = {}
    for layers in ([0], [3]):
        main(["decode", "--model", str(EMBEDDED), "--prompt", "3 1 2", "--gen_length", "8", "--policy", "clad",
              "--policy.threshold", "0.3", "--capture_layers", json.dumps(layers), "--json_output", "true",
              "--device", "cpu"])
        out[layers[0]] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"][0]
        den = HFDenoiser.from_pretrained(EMBEDDED, capture_layers=layers, device="cpu")
        ids = den.tokenizer.convert_tokens_to_ids("3 1 2".split())
        ref = generate(den, [ids], build_policy("clad", threshold=0.3), gen_length=8)
        assert out[layers[0]]["commit_step"] == ref.commit_step[0].tolist()
    assert torch.tensor(out[0]["commit_step"]).numel() == 8


def test_every_public_name_of_a_package_is_there_and_eval_stays_light():
    """`depmask.eval` exported task accuracy only, `depmask.train` the MDLM only: the decoding
    benchmark, the head's and the harvest's modules were reachable only by their files. The eval
    names beyond task accuracy load on first use (their modules import `datasets`)."""
    import importlib
    import subprocess
    import sys

    import depmask.eval.headline  # noqa: F401 - a submodule loaded first must not shadow an exported name
    from depmask.eval import headline_report

    assert callable(headline_report) and callable(importlib.import_module("depmask.eval").headline_report)
    for package in ("depmask", "depmask.decoding", "depmask.models", "depmask.predictor", "depmask.tasks",
                    "depmask.eval", "depmask.train", "depmask.data_gen"):
        module = importlib.import_module(package)
        assert [n for n in module.__all__ if getattr(module, n, None) is None] == [], package
    code = "import sys, depmask.eval; print('datasets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip() == "False"


@pytest.mark.parametrize("inline", [False, True], ids=["file", "inline"])
@pytest.mark.parametrize("policy", ["threshold", "{class_path: threshold, init_args: {threshold: 0.5}}"])
def test_a_decode_config_may_name_its_policy_by_preset(tmp_path, capsys, policy, inline):
    """`policy: threshold` in a config failed: "Expected a dot import path string: threshold",
    while `--policy threshold` worked. So did an inline config (`--config '{policy: threshold,
    ...}'`, which jsonargparse also takes) until 2026-12-01."""
    import json

    from depmask.cli import main

    text = f"model: {EMBEDDED}\nprompt: '1 2'\ngen_length: 4\npolicy: {policy}\njson_output: true\n"
    config = tmp_path / "c.yaml"
    config.write_text(text)
    main(["decode", f"--config={text}" if inline else "--config", *([] if inline else [str(config)])])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["policy"] == "threshold" and out["threshold"] == (0.5 if "init_args" in policy else 0.9)


def test_a_misspelled_preset_in_a_decode_config_is_named_with_the_presets(tmp_path):
    from depmask.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(f"model: {EMBEDDED}\nprompt: '1 2'\npolicy: thresold\n")
    with pytest.raises(ValueError, match=r"c\.yaml: `policy`: unknown policy 'thresold'; expected a preset name"):
        main(["decode", "--config", str(config)])
    with pytest.raises(ValueError, match=r"^the inline --config: `policy`: unknown policy 'thresold'"):
        main(["decode", f"--config={config.read_text()}"])


@pytest.mark.parametrize("argv, message", [
    (["decode", "--model", str(EMBEDDED), "--prompt", "1 2", "--seed", str(2**70)], r"`seed` \(\d+\) must be an int"),
    (["decode", "--model", "nonexist", "--prompt", "1 2"], r"`model` \('nonexist'\) is not a local model directory"),
    (["decode", "--model", str(EMBEDDED), "--prompt", "1 2", "--policy", "depmask.decoding.Policy"],
     r"`policy` \(Policy\) decides nothing"),
    (["eval", "subadditivity", "--model", str(EMBEDDED), "--seed", str(2**70), "--n", "2"], r"`seed` \(\d+\)"),
    (["decode", "--model", str(EMBEDDED), "--prompt", "1 2", "--policy", "low_confidence", "--compile_select", "aot"],
     r"policy 'low_confidence' does not declare the state it reads"),
    (["mdlm", "evaluate", "--model", str(EMBEDDED), "--tasks", "[gsm8k]"], r"`tasks` names 'gsm8k', a benchmark"),
    (["mdlm", "evaluate", "--model", str(EMBEDDED), "--tasks", "[sodoku4]"], r"`tasks`: unknown task"),
])
def test_commands_name_their_own_arguments_before_the_model_loads(argv, message, monkeypatch, tmp_path):
    from depmask.models import HFDenoiser

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(HFDenoiser, "from_pretrained", no_load)
    monkeypatch.chdir(tmp_path)  # eval subadditivity's default output
    with pytest.raises(ValueError, match=message):
        main(argv)
    assert not (tmp_path / "outputs").exists()


def test_policy_help_takes_a_preset_name(capsys):
    with pytest.raises(SystemExit) as done:
        main(["decode", "--policy.help", "threshold"])
    assert done.value.code == 0 and "--policy.threshold" in capsys.readouterr().out
