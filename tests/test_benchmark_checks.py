"""The benchmark scripts refuse bad arguments, and flags they would ignore, by name and before any work."""

import json
import subprocess
import sys

import pytest

from tests.conftest import EMBEDDED, ROOT


def _refused(script, args, monkeypatch, capsys):
    """Run `benchmarks/<script>.py args` in this process (as `python script.py` would: `__main__`,
    its directory on `sys.path`) up to the argparse refusal; return (exit code, stderr). In-process
    because a refusal comes before any work, and a subprocess would spend its time importing torch."""
    import runpy

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *args])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "benchmarks" / f"{script}.py"), run_name="__main__")
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("script,flag", [("selection_overhead", "decode_repeats"), ("selection_overhead", "batch"),
                                         ("decode_overhead", "repeats"), ("harvest_throughput", "examples"),
                                         ("head_tradeoff", "repeats")])
def test_benchmarks_refuse_a_count_below_one_before_any_work(tmp_path, monkeypatch, capsys, script, flag):
    extra = ["--point", "x", str(tmp_path), "demask"] if script == "head_tradeoff" else []
    code, err = _refused(script, [f"--{flag}", "0", *extra, "--out", str(tmp_path / "out.json")], monkeypatch, capsys)
    assert code == 2 and f"argument --{flag}: must be an int >= 1, got '0'" in err
    assert not (tmp_path / "out.json").exists()


def test_bench_argument_types_name_what_they_expect():
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_args import count, natural, positive
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert count("3") == 3 and natural("0") == 0 and positive("2.5") == 2.5
    for kind, bad, expected in [(count, "0", "an int >= 1"), (natural, "-1", "an int >= 0"), (positive, "-1", "a number > 0"),
                                (positive, "nan", "a number > 0"), (natural, "x", "an int >= 0")]:
        with pytest.raises(argparse.ArgumentTypeError, match=f"must be {expected}, got '{bad}'"):
            kind(bad)


def test_selection_overhead_refuses_a_simulated_canvas_that_does_not_fit(tmp_path, monkeypatch, capsys):
    code, err = _refused("selection_overhead", ["--simulate", "llada", "--sim_gen", "100", "--out", str(tmp_path / "out.json")],
                         monkeypatch, capsys)
    assert code == 2 and "--sim_gen (100) must be at most --sim_length (512) and a multiple of --sim_block (32)" in err
    assert not (tmp_path / "out.json").exists()


def test_selection_overhead_refuses_a_head_it_would_not_use(tmp_path, monkeypatch, capsys):
    """`--simulate` times a random head of the class defaults: a `--head` given with it was ignored."""
    code, err = _refused("selection_overhead", ["--simulate", "llada", "--head", str(tmp_path),
                                                "--out", str(tmp_path / "out.json")], monkeypatch, capsys)
    assert code == 2 and "--head is not used with --simulate" in err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("script,args,message", [
    ("selection_overhead", ["--base_ms", "5", "--sim_layers", "3"], "--sim_layers, --base_ms only apply with --simulate llada"),
    ("selection_overhead", ["--tau", "2"], "--tau (2.0) must lie in [0, 1]"),
    ("selection_overhead", ["--epsilon", "nan"], "--epsilon (nan) must be >= 0"),
    ("decode_overhead", ["--policy", "clad", "--threshold", "0.5"], "--threshold is the `threshold` policy's knob"),
    ("decode_overhead", ["--policy", "oracle"], "probes with extra forwards of another shape"),
])
def test_benchmarks_refuse_flags_they_would_ignore_or_misname(tmp_path, monkeypatch, capsys, script, args, message):
    code, err = _refused(script, [*args, "--out", str(tmp_path / "out.json")], monkeypatch, capsys)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("script, args, message", [
    ("decode_overhead.py", ["--gen_length", "16", "--block_length", "5"], "--block_length / --gen_length: `block_length` (5)"),
    ("decode_overhead.py", ["--prompt_length", "300", "--gen_length", "16", "--block_length", "16"],
     "--prompt_length (300) + --gen_length (16) must be <= 256"),
    ("decode_overhead.py", ["--policy", "demask", "--gen_length", "16", "--block_length", "16"],
     "--policy 'demask': the head scorer needs a trained DependencyHead"),
    ("selection_overhead.py", ["--simulate", "llada", "--sim_vocab", "63"], "--sim_vocab (63) must be >= 64"),
    ("selection_overhead.py", ["--task", "bogus"], "--task / --device: unknown task `name` ('bogus')"),
    ("head_tradeoff.py", ["--point", "a", "/nonexistent", "demask"], "--point a: `/nonexistent` has no summary.json"),
    ("head_tradeoff.py", ["--point", "a", "/tmp", "demask", "--window", "2"], "--window: accuracy window"),
    ("harvest_throughput.py", ["--task", "nosuch"], "--task: unknown task 'nosuch'"),
    ("harvest_throughput.py", ["--model", "/nonexistent"], "--model ('/nonexistent') is not a directory"),
    ("harvest_throughput.py", ["--device", "gpu"], "--device: `device` ('gpu') is not a torch device"),
    ("harvest_throughput.py", ["--topk", "1000"], "--model / --topk: `topk` (1000) must be at most 29"),
    ("selection_overhead.py", ["--head", "/nonexistent"], "--head: head checkpoint directory /nonexistent does not"),
    ("selection_overhead.py", ["--head", str(EMBEDDED)], "--head: "),
    ("selection_overhead.py", ["--model", "/nonexistent"], "--model ('/nonexistent') is not a directory"),
    ("selection_overhead.py", ["--simulate", "llada", "--task", "sort"], "--task only apply to the embedded model"),
    ("selection_overhead.py", ["--simulate", "llada", "--base_ms", "5", "--sim_layers", "4"],
     "--sim_layers shape the simulated model, which --base_ms replaces"),
])
def test_benchmark_arguments_are_named_before_work(script, args, message, tmp_path):
    """These ended in raw tracebacks (some after the model had loaded), naming no flag."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(tmp_path / "o.json")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_head_tradeoff_names_a_point_or_reference_it_cannot_read(tmp_path):
    """A point without the task or without `low_confidence`, and a reference directory without a
    summary, ended in tracebacks."""
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "summary.json").write_text(json.dumps([{"task": "sort", "policy": "threshold", "accuracy": 1.0}]))
    script = str(ROOT / "benchmarks" / "head_tradeoff.py")
    for args, message in ((["--point", "a", str(tmp_path / "ev"), "threshold"], "has no runs of task 'sudoku4'"),
                          (["--point", "a", str(tmp_path / "ev"), "threshold", "--task", "sort"],
                           "no `low_confidence` run of task 'sort'")):
        done = subprocess.run([sys.executable, script, *args, "--out", str(tmp_path / "o.json")],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_harvest_throughput_names_a_benchmark_without_its_data_before_the_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DEPMASK_DATA_DIR", raising=False)
    monkeypatch.setenv("DEPMASK_GSM8K", str(tmp_path / "none.jsonl"))  # whatever this machine holds
    code, err = _refused("harvest_throughput", ["--task", "gsm8k", "--model", str(tmp_path / "no-model"),
                                                "--out", str(tmp_path / "out.json")], monkeypatch, capsys)
    assert code == 2 and "--task: " in err and "none.jsonl" in err, err
    assert "error: --model" not in err and not (tmp_path / "out.json").exists()  # refused before the model
