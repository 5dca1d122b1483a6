"""What runs *inside* a sandboxed process: resource limits, Python-level guards, then the
untrusted program.

`depmask.tasks.benchmarks.sandbox` starts it as `python -s -P code_exec.py CONFIG_JSON` (`-s` only before
3.11) in a fresh session, with an environment of its own (PYTHONHASHSEED=0), the program's
temporary directory as working directory, HOME and TMPDIR, and writes a one-line nonce on its
stdin. In order, before any untrusted code runs, it:
1. reads the nonce, then points stdin at /dev/null; takes this file's directory off `sys.path`
   (where `-P` is missing) and sets `sys.argv` to `["program.py"]` (a test runner such as
   `unittest.main()` parses it);
2. sets hard = soft limits: RLIMIT_AS (memory), RLIMIT_FSIZE (largest file written),
   RLIMIT_CPU (a second clock behind the parent's wall-time kill), RLIMIT_NPROC (the user's
   thread count at launch + a small allowance; the kernel ignores it for root), RLIMIT_CORE = 0;
3. installs guards: no process creation or signalling (`os.fork`, `os.system`, `os.exec*`,
   `os.spawn*`, `posix_spawn`, `subprocess.Popen`, `_posixsubprocess.fork_exec`, `os.kill`,
   `os.setsid`, ...), no sockets or DNS (`socket.socket`, `socketpair`, `getaddrinfo`, ...), no
   file creation, writing, renaming or deletion outside the working directory (`open`,
   `io.FileIO`, `os.open` and the path-mutating `os` functions, given a path or an open
   descriptor), the same process and file functions of the C library through `ctypes`
   (`ctypes.CDLL(None).fork()`), and no `resource` import (its limits stay as set);
4. executes the program as `__main__` and records its outcome (`ok`, `assertion`, `memory`,
   `exit:<code>`, `exception:<name>`) with the nonce in a status file the program cannot reach by
   path, so an early `os._exit(0)` or a line printed to look like success does not pass.

These guards live in the same interpreter as the program, so they are a tripwire for accidents
and careless code, *not* a security boundary: a determined program can recover the originals
(e.g. through closures or `gc`), read the nonce and the status descriptor from this module's
frame (`sys._getframe`) and report a pass, or reach the OS some other way — C extensions write
files without Python's `open` (`sqlite3.connect`, `dbm`), and `ctypes` calls libc directly.
`ctypes` is importable (`sympy`, `scipy` and `pandas` import it; blocking it graded solutions
that use them as errors), with the C functions named in `_C_FUNCTIONS` refused when a library
object looks them up by name; `ctypes`' lower levels (`CDLL._FuncPtr`, `_ctypes.dlsym`) still reach
them. The kernel-level limits above and the parent's network
namespace and process-group kill are what holds. Standard library only; it is
never imported by depmask (importing it is harmless: nothing runs outside `main`).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import re
import sys

_SPAWN_AND_SIGNAL = (
    "fork", "forkpty", "vfork", "system", "popen", "posix_spawn", "posix_spawnp",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe", "fexecve",
    "kill", "killpg", "setsid", "setpgid", "setpgrp", "setuid", "setgid", "setreuid", "setregid",
    "setresuid", "setresgid", "chroot", "pidfd_open",
)  # fmt: skip
_ONE_PATH = (
    "remove", "unlink", "rmdir", "mkdir", "chmod", "lchmod", "chown", "lchown", "truncate",
    "utime", "mkfifo", "mknod", "setxattr", "removexattr", "chflags", "lchflags",
    "fchmod", "fchown", "ftruncate",  # given a descriptor: the file it names
)  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_NETWORK = (
    "socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo",
    "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
)  # fmt: skip


# C library functions refused through ctypes: the process and signal calls above, the raw system
# call, and the ones that create, open or change files by path
# (compared lower-case with leading underscores and a fortified `_2` suffix stripped: glibc's
# `_Fork`, `__open64`, `__open_2`)
_C_FUNCTIONS = frozenset(name.lower() for name in _SPAWN_AND_SIGNAL + _ONE_PATH + (
    "clone", "clone3", "syscall", "daemon", "execveat", "open", "open64", "openat", "openat64", "creat",
    "creat64", "fopen", "fopen64", "freopen", "freopen64", "rename", "renameat", "renameat2", "link",
    "linkat", "symlink", "symlinkat", "unlinkat", "mkdirat", "fchmodat", "fchownat", "ftruncate64",
    "truncate64", "utimes", "utimensat", "futimens", "mkfifoat", "mknodat", "mkstemp", "mkstemp64",
    "mkostemp", "mkostemp64", "mkstemps", "mkostemps", "tmpfile", "tmpfile64", "tgkill", "tkill",
    "pidfd_send_signal", "sigqueue", "mkdtemp", "mkstemps64", "mkostemps64", "shm_open", "shm_unlink",
    "sem_open", "mq_open", "lsetxattr", "fsetxattr", "lremovexattr", "fremovexattr",
))  # fmt: skip


class SandboxViolation(PermissionError):
    """An operation the sandbox forbids (process creation, network, a write outside the dir)."""


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise SandboxViolation(f"{what} is disabled in the depmask sandbox")

    refused.__name__ = what.rsplit(".", 1)[-1]
    return refused


def set_limits(cfg: dict) -> None:
    """Hard = soft resource limits; `0` or a missing key leaves that limit alone."""
    import resource

    def both(which: int, value: int) -> None:
        if value and value > 0:
            resource.setrlimit(which, (value, value))

    both(resource.RLIMIT_AS, cfg.get("memory_bytes", 0))
    both(resource.RLIMIT_FSIZE, cfg.get("file_size_bytes", 0))
    both(resource.RLIMIT_CPU, cfg.get("cpu_seconds", 0))
    both(resource.RLIMIT_NPROC, cfg.get("nproc", 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _install_process_guards() -> None:
    import posix

    for module in (os, posix):
        for name in _SPAWN_AND_SIGNAL:
            if hasattr(module, name):
                setattr(module, name, _refuse(f"os.{name}"))
    import subprocess

    class BlockedPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            raise SandboxViolation("subprocess.Popen is disabled in the depmask sandbox")

    subprocess.Popen = BlockedPopen
    try:
        import _posixsubprocess

        _posixsubprocess.fork_exec = _refuse("_posixsubprocess.fork_exec")
    except ImportError:
        pass


def _install_network_guards() -> None:
    import _socket
    import socket

    class BlockedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            raise SandboxViolation("socket.socket is disabled in the depmask sandbox")

    socket.socket = BlockedSocket
    _socket.socket = BlockedSocket
    for module in (socket, _socket):
        for name in _NETWORK:
            if hasattr(module, name):
                setattr(module, name, _refuse(f"socket.{name}"))


def _install_write_guards(work: str) -> None:
    import _io
    import posix

    allowed = (os.path.realpath(work), os.path.realpath(os.devnull))
    # the program's own stdout and stderr (files beside `work`): `sys.stdout = open(1, "w")` writes there
    streams = {os.readlink(f"/proc/self/fd/{fd}") for fd in (1, 2) if os.path.exists(f"/proc/self/fd/{fd}")}

    def check(path, dir_fd=None) -> None:
        if isinstance(path, int):  # an open descriptor (`os.chmod(fd, ...)`, `open(1, "w")`): the file it names
            p = os.readlink(f"/proc/self/fd/{path}")
            if not os.path.isabs(p) or p in streams:  # a pipe, socket or anonymous inode; stdout / stderr
                return
        else:
            p = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(p):
            p = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), p)
        real = os.path.realpath(p)
        if real in allowed or real.startswith(allowed[0] + os.sep) or real in streams:  # /dev/stdout too
            return
        raise SandboxViolation(f"writing {real!r} is outside the sandbox directory {allowed[0]!r}")

    real_open, real_os_open, real_fileio = builtins.open, os.open, _io.FileIO

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            check(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & _WRITE_FLAGS:
            check(path, dir_fd)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    class GuardedFileIO(real_fileio):
        def __init__(self, file, mode="r", closefd=True, opener=None):
            if any(c in mode for c in "wax+"):
                check(file)
            super().__init__(file, mode, closefd, opener)

    builtins.open = io.open = _io.open = guarded_open
    io.FileIO = _io.FileIO = GuardedFileIO

    def one_path(fn):
        def guarded(path, *args, dir_fd=None, **kwargs):
            check(path, dir_fd)
            if dir_fd is not None:
                kwargs["dir_fd"] = dir_fd
            return fn(path, *args, **kwargs)

        return guarded

    def two_paths(fn, check_src: bool):
        def guarded(src, dst, *args, src_dir_fd=None, dst_dir_fd=None, dir_fd=None, **kwargs):
            if check_src:
                check(src, src_dir_fd)
            check(dst, dst_dir_fd if dst_dir_fd is not None else dir_fd)
            for key, value in (("src_dir_fd", src_dir_fd), ("dst_dir_fd", dst_dir_fd), ("dir_fd", dir_fd)):
                if value is not None:
                    kwargs[key] = value
            return fn(src, dst, *args, **kwargs)

        return guarded

    for module in (os, posix):
        module.open = guarded_os_open
        for name in _ONE_PATH:
            if hasattr(module, name):
                setattr(module, name, one_path(getattr(module, name)))
        module.rename = two_paths(module.rename, check_src=True)
        module.replace = two_paths(module.replace, check_src=True)
        if hasattr(module, "symlink"):  # the link lives inside; writes through it are checked
            module.symlink = two_paths(module.symlink, check_src=False)
        if hasattr(module, "link"):  # a hard link would alias an outside file from inside
            module.link = _refuse("os.link")


def _install_ctypes_guard() -> None:
    """`ctypes` loads, but a C library function of `_C_FUNCTIONS` is refused when looked up
    (`CDLL.__getattr__` goes through `__getitem__`; `PyDLL` and `cdll.<lib>` are CDLLs)."""
    import ctypes

    lookup = ctypes.CDLL.__getitem__

    def guarded(self, name_or_ordinal):
        name = name_or_ordinal.decode(errors="replace") if isinstance(name_or_ordinal, bytes) else name_or_ordinal
        if isinstance(name, str) and re.sub(r"_2$", "", name.lstrip("_").lower()) in _C_FUNCTIONS:
            raise SandboxViolation(f"ctypes access to {name}() is disabled in the depmask sandbox")
        return lookup(self, name_or_ordinal)

    ctypes.CDLL.__getitem__ = guarded


def install_guards(work: str) -> None:
    """Every Python-level guard of the module docstring, for the directory `work`."""
    sys.dont_write_bytecode = True
    _install_process_guards()
    _install_network_guards()
    _install_write_guards(work)
    _install_ctypes_guard()
    sys.modules["resource"] = None  # `import resource` now raises ImportError (ctypes: see the docstring)


def run_source(source: str, filename: str = "program.py") -> str:
    """Execute `source` as `__main__`; returns the outcome word (tracebacks go to stderr)."""
    import traceback

    def report(e: BaseException) -> None:  # the program's frames only, not this wrapper's
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)

    try:
        code = compile(source, filename, "exec")
        exec(code, {"__name__": "__main__", "__file__": filename, "__builtins__": builtins})
        return "ok"
    except MemoryError:
        os.write(2, b"MemoryError: the program exceeded the sandbox memory limit\n")
        return "memory"
    except SystemExit as e:
        return f"exit:{e.code}"
    except AssertionError as e:
        report(e)
        return "assertion"
    except BaseException as e:  # noqa: BLE001 - everything the program raises is its outcome
        try:
            report(e)
        except MemoryError:
            pass
        return f"exception:{type(e).__name__}"


def main(argv: list[str]) -> None:
    # kept before the program runs: it can replace `os.write` (rewriting its status line) or `os._exit`
    write, exit_ = os.write, os._exit
    cfg = json.loads(argv[1])
    nonce = sys.stdin.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0, now /dev/null
    status_fd = os.open(cfg["status"], os.O_WRONLY | os.O_TRUNC)
    with open(cfg["program"], encoding="utf-8") as f:
        source = f.read()
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != here]  # what `-P` does
    sys.argv = ["program.py"]
    set_limits(cfg)
    install_guards(cfg["work"])
    outcome = run_source(source)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the program may have closed or replaced it
            pass
    write(status_fd, f"{nonce} {outcome}\n".encode())
    exit_(0 if outcome == "ok" else 1)  # skip atexit hooks the program registered


if __name__ == "__main__":
    main(sys.argv)
