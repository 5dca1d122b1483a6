"""Run untrusted Python programs (generated code plus its tests), each in its own process with
limits, and a bounded pool that runs several at once.

One program = one fresh temporary directory (working directory, HOME and TMPDIR; deleted
afterwards) and one process started in a new session (`start_new_session=True`), running
`depmask.tasks.benchmarks.code_exec`, which sets the resource limits and guards and then
executes the program.
The process gets an environment built from scratch with a fixed hash seed (`PYTHONHASHSEED=0`, so
a verdict that depends on set order is the same every run) and no user site-packages.
What stops each hostile case, and where:

| threat                | mechanism                                                                |
|-----------------------|--------------------------------------------------------------------------|
| infinite loop         | wall-time limit: SIGKILL to the whole process group, then the group is   |
|                       | reaped (also when the wait is interrupted, e.g. Ctrl-C); RLIMIT_CPU as a |
|                       | second clock if the parent itself dies                                   |
| memory bomb           | RLIMIT_AS (allocation fails with MemoryError → status `memory`)          |
| fork bomb             | process creation disabled in the child (`os.fork`, `subprocess`, libc's  |
|                       | `fork` through `ctypes`, ...); RLIMIT_NPROC = the user's thread count +  |
|                       | `max_processes` (the kernel does not apply it to root); group kill on    |
|                       | every exit                                                               |
| network               | a network namespace with no interfaces up (`unshare --net`, plus         |
|                       | `--user` when not root) when it works on this machine; always also the   |
|                       | Python socket/DNS guard                                                  |
| writes outside        | HOME/TMPDIR inside the directory; `open`/`os.open`/path-mutating `os`    |
|                       | functions refuse paths outside it; RLIMIT_FSIZE caps any file written    |
| `os.system` & co      | disabled in the child                                                    |
| output flood          | stdout/stderr go to files capped by RLIMIT_FSIZE; only tails are read    |

The limits are set by the child itself, before any untrusted code runs, rather than in a
`preexec_fn`: the pool launches from threads, and `preexec_fn` is documented as unsafe there.

NOT a security boundary. The Python-level guards share the interpreter with the program and can be
undone by a determined attacker (closures, `gc`, the status descriptor in the runner's frame, C
extensions such as `sqlite3` that write files themselves); reading files is
not restricted; as root, RLIMIT_NPROC does nothing and permission checks do not apply. Without a
network namespace the socket guard is all that blocks the network. This is the level of the
HumanEval/MBPP reference harnesses: fine for scoring a model's honest attempts on a machine you
own. For code you have reason to distrust, run the whole evaluation in a disposable container or VM
(no network, read-only root filesystem, a non-root user, a cgroup `pids.max` and memory limit,
e.g. `docker run --network none --read-only --pids-limit 64 --memory 4g --user 65534`).
POSIX only (Linux is what it is tested on).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

STATUSES: tuple[str, ...] = ("passed", "failed", "timeout", "memory", "error")
_CHILD = Path(__file__).with_name("code_exec.py")
# `-I` without its `-E`, which would ignore the PYTHONHASHSEED the child needs (set iteration order,
# hence some verdicts, would vary run to run): `-s` no user site-packages, `-P` (3.11+) not the
# script's directory on sys.path (code_exec removes it on 3.10), and the child's environment is
# built from scratch, so no other PYTHON* variable reaches it
_ISOLATION = ("-s", "-P") if sys.version_info >= (3, 11) else ("-s",)
_TAIL_CHARS = 4000


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits.

    Args:
        timeout_s: wall time before the process group is killed (status `timeout`); finite, > 0.
        memory_mb: address-space limit (RLIMIT_AS) of the program's process.
        file_size_mb: the largest file the program may write, stdout/stderr included.
        max_processes: threads/processes the program may add to the user's count at launch
            (RLIMIT_NPROC; ignored by the kernel for root; process creation is also disabled).
        network_namespace: run in a fresh network namespace (`unshare`); None = when available.

    The three counts are whole numbers (rlimits are integers): an integral float such as `4096.0`
    or `4e3` (what YAML may give) becomes that int; `1024.5` is refused.
    """

    timeout_s: float = 10.0
    memory_mb: int = 2048
    file_size_mb: int = 16
    max_processes: int = 8
    network_namespace: bool | None = None

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "file_size_mb", "max_processes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"`{name}` ({value!r}) must be a number, not {type(value).__name__}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"`timeout_s` ({self.timeout_s}) must be > 0 and finite (seconds)")
        for name, unit in (("memory_mb", " of MB"), ("file_size_mb", " of MB"), ("max_processes", "")):
            value = getattr(self, name)
            if not (math.isfinite(value) and value == int(value)):
                raise ValueError(f"`{name}` ({value}) must be a whole number{unit}")
            object.__setattr__(self, name, int(value))  # setrlimit takes ints only
        if self.memory_mb < 64:
            raise ValueError(f"`memory_mb` ({self.memory_mb}) must be >= 64 (the interpreter needs it)")
        if self.file_size_mb < 1:
            raise ValueError(f"`file_size_mb` ({self.file_size_mb}) must be >= 1")
        if self.max_processes < 0:
            raise ValueError(f"`max_processes` ({self.max_processes}) must be >= 0")


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one program.

    status: `passed` (ran to the end), `failed` (an AssertionError escaped: a test failed),
    `timeout`, `memory` (MemoryError or the memory limit), `error` (any other exception, an early
    exit even with code 0, a blocked operation, a signal, or a launch failure).
    """

    passed: bool
    status: str
    seconds: float
    stderr_tail: str
    stdout_tail: str = ""
    returncode: int | None = None
    pid: int | None = None  # also the process group id of the run


@lru_cache(maxsize=1)
def network_namespace_prefix() -> tuple[str, ...] | None:
    """The `unshare` command prefix that gives a child an empty network namespace here, or None.

    Probed once: root uses `unshare --net`, other users `unshare --user --net` (needs
    unprivileged user namespaces). The probe starts this interpreter through the prefix.
    """
    exe = shutil.which("unshare")
    if exe is None or not hasattr(os, "geteuid"):
        return None
    prefix = (exe, "--net") if os.geteuid() == 0 else (exe, "--user", "--net")
    try:
        probe = subprocess.run([*prefix, sys.executable, "-I", "-c", "pass"],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return prefix if probe.returncode == 0 else None


def run_program(program: str, limits: SandboxLimits | None = None) -> ExecResult:
    """Run one Python program in a fresh sandbox; see the module docstring for what is enforced."""
    limits = limits or SandboxLimits()
    root = Path(tempfile.mkdtemp(prefix="depmask-sandbox-")).resolve()
    try:
        return _run_in(root, program, limits)
    finally:
        _rmtree(root)


def run_programs(programs: Sequence[str], limits: SandboxLimits | None = None,
                 max_workers: int | None = None) -> list[ExecResult]:
    """Run `programs` in parallel, at most `max_workers` at a time (default: min(4, CPUs)),
    each in its own sandbox; results come back in input order."""
    if max_workers is None:
        max_workers = min(4, os.cpu_count() or 1)
    if max_workers < 1:
        raise ValueError(f"`max_workers` ({max_workers}) must be >= 1")
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="depmask-sandbox") as pool:
        return list(pool.map(lambda p: run_program(p, limits), programs))


def _run_in(root: Path, program: str, limits: SandboxLimits) -> ExecResult:
    work = root / "work"
    (work / "tmp").mkdir(parents=True)
    (root / "program.py").write_text(program, encoding="utf-8")
    status = root / "status"
    status.touch()
    cfg = {
        "work": str(work),
        "program": str(root / "program.py"),
        "status": str(status),
        "memory_bytes": limits.memory_mb * 2**20,
        "file_size_bytes": limits.file_size_mb * 2**20,
        "cpu_seconds": min(int(limits.timeout_s) + 2, 2**31 - 1),
        "nproc": (tasks + limits.max_processes) if (tasks := _user_tasks()) else 0,
    }
    prefix: tuple[str, ...] = ()
    if limits.network_namespace is not False:
        found = network_namespace_prefix()
        if found is None and limits.network_namespace:
            return _launch_error("`network_namespace=True` but `unshare` cannot create one here")
        prefix = found or ()
    # the whole environment: nothing of the parent's (no PYTHONPATH & co), and a fixed hash seed
    env = {"PATH": os.defpath, "HOME": str(work), "TMPDIR": str(work / "tmp"),
           "TMP": str(work / "tmp"), "TEMP": str(work / "tmp"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONHASHSEED": "0"}
    nonce = secrets.token_hex(16)
    start = time.perf_counter()
    with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
        try:
            proc = subprocess.Popen(
                [*prefix, sys.executable, *_ISOLATION, str(_CHILD), json.dumps(cfg)],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work, env=env,
                start_new_session=True, close_fds=True,
            )
        except OSError as e:
            return _launch_error(f"could not start the sandbox process: {e}")
        try:
            try:
                proc.stdin.write(f"{nonce}\n".encode())
                proc.stdin.close()
            except OSError:  # the child died before reading its nonce
                pass
            timed_out = _wait_unreaped(proc, limits.timeout_s)
        finally:  # also on Ctrl-C: the program must not outlive this call
            _kill_group(proc.pid)  # leader not reaped yet, so the group id cannot have been reused
            returncode = proc.wait()
    seconds = time.perf_counter() - start
    stderr_tail, stdout_tail = _tail(root / "stderr"), _tail(root / "stdout")
    outcome = _read_outcome(status, nonce)
    state = _status(outcome, timed_out, returncode, stderr_tail)
    return ExecResult(passed=state == "passed", status=state, seconds=seconds, stderr_tail=stderr_tail,
                      stdout_tail=stdout_tail, returncode=returncode, pid=proc.pid)


def _status(outcome: str | None, timed_out: bool, returncode: int, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if outcome == "ok":
        return "passed"
    if outcome == "assertion":
        return "failed"
    if outcome == "memory" or outcome == "exception:MemoryError":
        return "memory"
    if outcome is None:  # died without reporting: a signal, os._exit, or a crash
        if returncode == -signal.SIGXCPU:
            return "timeout"
        if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
            return "memory"
    return "error"


def _wait_unreaped(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until the process exits (without reaping it) or `timeout` passes; True on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if hasattr(os, "waitid"):
            exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        else:  # reaps; the group kill after it is then only best effort
            exited = proc.poll() is not None
        if exited:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(delay, remaining))
        delay = min(2 * delay, 0.05)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_outcome(status: Path, nonce: str) -> str | None:
    try:
        line = status.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    got, _, outcome = line.partition(" ")
    return outcome if got == nonce and outcome else None


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4 * _TAIL_CHARS))
            return f.read().decode("utf-8", errors="replace")[-_TAIL_CHARS:]
    except OSError:
        return ""


def _user_tasks() -> int:
    """Threads owned by this real uid (what RLIMIT_NPROC counts on Linux); 0 if unknown."""
    uid, total = os.getuid(), 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1").strip() or 1)
    return total


def _launch_error(message: str) -> ExecResult:
    return ExecResult(passed=False, status="error", seconds=0.0, stderr_tail=message)


def _rmtree(root: Path) -> None:
    """Delete the sandbox directory even if the program removed permissions inside it."""

    def fix(func, path, _exc) -> None:
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(root, onexc=fix)
    else:
        shutil.rmtree(root, onerror=fix)
