"""Whether AOTInductor libraries load in this Python without killing it: the first library of each
device type a process is about to load (`aot.py`) is loaded in a child process first.

Why: on one GPU machine (2026-11-30: an H200, torch 2.11.0+cu130, gcc 13.3, Ubuntu 24.04), loading
any AOTInductor package — CUDA or CPU, `select` or a three-operation test module — killed the
process with a segmentation fault inside the library's own device-string parsing (`std::regex` in
`parse_device_str`). The same packages loaded and ran once the system's C++ runtime was preloaded
(`LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6)`). A segmentation fault cannot be caught, so a
decode with `compile_select="aot"` would have died mid-run; with the probe it stops with a
RuntimeError that names the fix, before the first compiled step. The probe costs one child
process (importing torch, a few seconds) per device type per process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

# what the child runs; a module attribute, so that a test can make the child crash
_CHILD = "import sys, torch; torch._inductor.aoti_load_package(sys.argv[1])"
_TIMEOUT_S = 600
_LOADED: set[str] = set()  # device types whose libraries loaded in a child


def check_loads(package: str | Path, device_type: str) -> None:
    """Load `package` in a child process unless a library of `device_type` already loaded in one.

    Raises RuntimeError when the child is killed by a signal (loading the library here would kill
    this process) or does not finish within 10 minutes. A child that fails with a Python error
    is not this probe's concern: the load in this process raises that error itself.
    """
    if device_type in _LOADED:
        return
    try:
        child = subprocess.run([sys.executable, "-c", _CHILD, str(package)], capture_output=True, text=True,
                               timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"loading a compiled selection ({device_type}) in a test process did not finish in "
                           f"{_TIMEOUT_S} s; decode without compile_select='aot'") from err
    if child.returncode < 0:
        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = f"signal {-child.returncode}"
        tail = "\n".join((child.stderr or "").strip().splitlines()[-5:])
        raise RuntimeError(
            f"loading a compiled selection (AOTInductor, {device_type}) killed a test process with {name}, so "
            "loading it here would kill this one. Where this was seen (torch 2.11.0+cu130, gcc 13.3) the crash "
            "was in the C++ runtime the library binds to, and starting Python with "
            "LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6) made libraries load; or decode without "
            "compile_select='aot' ('jit' compiles with torch.compile)."
            + (f" The test process's last output:\n{tail}" if tail else ""))
    if child.returncode == 0:
        _LOADED.add(device_type)
