"""The child-process probe before an AOTInductor library is first loaded (`aot_probe.py`): a
library whose load kills the process stops a decode with an error instead."""

import subprocess

import pytest
import torch

from depmask.decoding import aot_probe, build_policy, compiled_select, generate

SEGFAULT = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"


@pytest.fixture
def fresh(monkeypatch):
    """No device type checked yet in this process (restored after the test)."""
    monkeypatch.setattr(aot_probe, "_LOADED", set())


def test_a_child_killed_by_a_signal_is_an_error_that_names_the_fix(fresh, monkeypatch, tmp_path):
    monkeypatch.setattr(aot_probe, "_CHILD", "import sys; print('loading', sys.argv[1], file=sys.stderr); " + SEGFAULT)
    with pytest.raises(RuntimeError, match=r"cuda\) killed a test process with SIGSEGV") as err:
        aot_probe.check_loads(tmp_path / "select-0.pt2", "cuda")
    assert "LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6)" in str(err.value)
    assert f"loading {tmp_path / 'select-0.pt2'}" in str(err.value)  # the child's last output, and its argument
    assert aot_probe._LOADED == set()


def test_a_loaded_device_type_is_not_probed_again_and_a_python_error_is_left_to_the_load(fresh, monkeypatch,
                                                                                        tmp_path):
    runs = []
    real_run = subprocess.run

    def counted(*args, **kwargs):
        runs.append(args[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counted)
    monkeypatch.setattr(aot_probe, "_CHILD", "raise ValueError('not a package')")
    aot_probe.check_loads(tmp_path / "a.pt2", "cpu")  # no error: the load here raises its own
    assert aot_probe._LOADED == set() and len(runs) == 1
    monkeypatch.setattr(aot_probe, "_CHILD", "import sys")
    aot_probe.check_loads(tmp_path / "a.pt2", "cpu")
    aot_probe.check_loads(tmp_path / "b.pt2", "cpu")
    assert aot_probe._LOADED == {"cpu"} and len(runs) == 2
    monkeypatch.setattr(aot_probe, "_CHILD", SEGFAULT)
    aot_probe.check_loads(tmp_path / "c.pt2", "cpu")  # already known to load: no child
    with pytest.raises(RuntimeError, match="SIGSEGV"):
        aot_probe.check_loads(tmp_path / "c.pt2", "cuda")  # another device type is probed
    assert len(runs) == 3


def test_a_child_that_hangs_is_an_error(fresh, monkeypatch, tmp_path):
    monkeypatch.setattr(aot_probe, "_CHILD", "import time; time.sleep(30)")
    monkeypatch.setattr(aot_probe, "_TIMEOUT_S", 1)
    with pytest.raises(RuntimeError, match=r"did not finish in 1 s; decode without compile_select='aot'"):
        aot_probe.check_loads(tmp_path / "a.pt2", "cpu")


def test_compiling_and_loading_from_the_cache_both_probe_first(fresh, mock_denoiser, prompts, tmp_path,
                                                               monkeypatch):
    """The real probe passes on a compiled library before this process loads it; a library taken
    from the disk cache is probed too, and a crashing probe there stops the decode (it is not
    taken for a damaged file, which would be compiled again and loaded here)."""
    monkeypatch.setenv("DEPMASK_AOT_CACHE", str(tmp_path))
    probed = []
    real = aot_probe.check_loads

    def recorded(package, device_type):
        probed.append((str(package), device_type, device_type in aot_probe._LOADED))
        return real(package, device_type)

    monkeypatch.setattr("depmask.decoding.aot.check_loads", recorded)
    kwargs = dict(gen_length=6, pad_id=0)
    first = build_policy("clad", threshold=0.9)
    generate(mock_denoiser, prompts, first, compile_select="aot", **kwargs)
    assert len(probed) == 1 and probed[0][1:] == ("cpu", False) and probed[0][0].endswith(".pt2")
    assert aot_probe._LOADED == {"cpu"}  # the real child loaded it

    aot_probe._LOADED.clear()
    monkeypatch.setattr(aot_probe, "_CHILD", SEGFAULT)

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again: the crash was taken for a damaged cached library")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compiling)
    second = build_policy("clad", threshold=0.9)  # a new object: its library comes from the cache
    with pytest.raises(RuntimeError, match="killed a test process with SIGSEGV"):
        generate(mock_denoiser, prompts, second, compile_select="aot", **kwargs)
    assert probed[1][0].startswith(str(tmp_path)) and compiled_select(second, "aot").loaded == 0
