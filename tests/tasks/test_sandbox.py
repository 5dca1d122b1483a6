"""The sandbox holds against hostile programs, lets a normal one pass, and runs a bounded pool.

Every hostile program here is bounded on its own (a fork bomb forks at most 20 sleeping children,
memory bombs stop at the limit), so a broken guard cannot take the shared test machine down.
"""

from __future__ import annotations

import os
import socket
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from depmask.tasks.benchmarks.sandbox import (
    STATUSES,
    SandboxLimits,
    network_namespace_prefix,
    run_program,
    run_programs,
)

LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=256)


def _run(source: str, limits: SandboxLimits = LIMITS):
    return run_program(textwrap.dedent(source), limits)


def _group_members(pgid: int) -> list[int]:
    """Pids (zombies included) whose process group is `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _assert_group_gone(pgid: int) -> None:
    deadline = time.monotonic() + 3.0
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(pgid) == [], f"process group {pgid} still has members"


def test_normal_program_passes():
    r = _run("""
        import math, json, tempfile
        assert math.isclose(math.sqrt(2) ** 2, 2.0)
        with open("scratch.txt", "w") as f:   # writing inside the sandbox directory is fine
            f.write("ok")
        with tempfile.TemporaryFile() as t:   # so is TMPDIR
            t.write(b"x")
        print(json.dumps({"ok": open("scratch.txt").read()}))
    """)
    assert r.status == "passed" and r.passed, r.stderr_tail
    assert '{"ok": "ok"}' in r.stdout_tail
    assert r.seconds < LIMITS.timeout_s


def test_statuses_for_failed_assertion_exception_and_early_exit():
    assert _run("assert 1 + 1 == 3, 'wrong sum'").status == "failed"
    err = _run("raise KeyError('boom')")
    assert err.status == "error" and "KeyError" in err.stderr_tail
    assert _run("def f(:\n  pass").status == "error"
    # exiting before the end is not a pass, whatever the exit code: the checks may not have run
    assert _run("import sys\nsys.exit(0)\nassert False").status == "error"
    assert _run("import os\nos._exit(0)\nassert False").status == "error"
    assert set(STATUSES) == {"passed", "failed", "timeout", "memory", "error"}


@pytest.mark.parametrize("body", ["while True:\n    pass", "import time\ntime.sleep(120)"])
def test_infinite_loop_times_out_and_its_process_group_is_gone(body):
    r = _run(f"import os\nprint(os.getpid(), os.getpgrp(), flush=True)\n{body}\n",
             SandboxLimits(timeout_s=1.0, memory_mb=256))
    assert r.status == "timeout" and not r.passed
    pid, pgid = map(int, r.stdout_tail.split())
    assert pid == pgid == r.pid  # the program led its own process group
    assert r.seconds < 5.0
    _assert_group_gone(pgid)


@pytest.mark.parametrize("body", [
    "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 2**20))",
    "x = bytearray(8 * 2**30)",
    "x = [0] * (2**31)",
])
def test_memory_bomb_hits_the_memory_limit(body):
    r = _run(body)
    assert r.status == "memory" and not r.passed, r.stderr_tail
    assert "MemoryError" in r.stderr_tail


FORK_BOMBS = {
    "os.fork": """
        import os, time
        for _ in range(20):  # bounded, should the guard ever fail
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
    """,
    "posix.fork": "import posix\nposix.fork()",
    "subprocess": "import subprocess\nsubprocess.run(['sleep', '60'])",
    "multiprocessing": """
        import multiprocessing, time
        multiprocessing.Process(target=time.sleep, args=(60,)).start()
    """,
    "posix_spawn": "import os\nos.posix_spawn('/bin/sleep', ['sleep', '60'], dict(os.environ))",
    "ctypes fork": "import ctypes\nctypes.CDLL(None).fork()",
    "setsid escape": "import os\nos.setsid()",
}


@pytest.mark.parametrize("name", sorted(FORK_BOMBS))
def test_fork_bomb_cannot_create_processes(name):
    r = _run("import os\nprint(os.getpgrp(), flush=True)\n" + textwrap.dedent(FORK_BOMBS[name]))
    assert r.status == "error" and not r.passed
    assert "SandboxViolation" in r.stderr_tail or "ctypes" in r.stderr_tail, r.stderr_tail
    _assert_group_gone(int(r.stdout_tail.split()[0]))


@pytest.mark.parametrize("network_namespace", [None, False])
def test_socket_connect_is_blocked(network_namespace):
    limits = SandboxLimits(timeout_s=5.0, memory_mb=256, network_namespace=network_namespace)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        port = server.getsockname()[1]
        attempts = [
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')",
            f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))",
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",
            "import socket\nsocket.getaddrinfo('example.com', 80)",
        ]
        for program in attempts:
            r = run_program(program, limits)
            assert r.status == "error" and not r.passed, (program, r.stderr_tail)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody got through


def test_network_namespace_has_no_interfaces_up():
    if network_namespace_prefix() is None:
        pytest.skip("`unshare` cannot create a network namespace on this machine")
    r = _run("import socket\nprint(sorted(name for _, name in socket.if_nameindex()))",
             SandboxLimits(timeout_s=5.0, memory_mb=256, network_namespace=True))
    assert r.status == "passed", r.stderr_tail
    assert r.stdout_tail.strip() == "['lo']"


def test_write_to_home_goes_nowhere_near_the_real_home():
    real_home = Path.home()
    name = f"depmask-sandbox-probe-{uuid.uuid4().hex}.txt"
    target = real_home / name
    try:
        # `~` is the sandbox directory: the write succeeds there and vanishes with it
        r = _run(f"""
            import os
            home = os.path.expanduser("~")
            open(os.path.join(home, {name!r}), "w").write("x")
            print(home)
        """)
        assert r.status == "passed", r.stderr_tail
        assert Path(r.stdout_tail.strip()) != real_home
        assert not Path(r.stdout_tail.strip()).exists()  # deleted afterwards
        assert not target.exists()
        # the real home by its absolute path is refused
        r = _run(f"open({str(target)!r}, 'w').write('x')")
        assert r.status == "error" and "SandboxViolation" in r.stderr_tail
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


WRITES_OUTSIDE = {
    "open": "open(P, 'w').write('x')",
    "append": "open(P, 'a').write('x')",
    "pathlib": "import pathlib\npathlib.Path(P).write_text('x')",
    "os.open": "import os\nos.open(P, os.O_WRONLY | os.O_CREAT)",
    "io.FileIO": "import io\nio.FileIO(P, 'w')",
    "rename": "import os\nopen('inside', 'w').close()\nos.rename('inside', P)",
    "symlink": "import os\nos.symlink(P, 'link')\nopen('link', 'w').write('x')",
    "hard link": "import os\nopen('inside', 'w').close()\nos.link('inside', P)",
    "mkdir": "import os\nos.mkdir(P)",
    "shutil.copy": "import shutil\nopen('inside', 'w').close()\nshutil.copy('inside', P)",
}


@pytest.mark.parametrize("name", sorted(WRITES_OUTSIDE))
def test_writes_outside_the_sandbox_directory_fail(tmp_path, name):
    target = tmp_path / "outside.txt"
    r = _run(f"P = {str(target)!r}\n" + WRITES_OUTSIDE[name])
    assert r.status == "error" and "SandboxViolation" in r.stderr_tail, r.stderr_tail
    assert not target.exists()


def test_delete_outside_is_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    r = _run(f"import os\nos.remove({str(victim)!r})")
    assert r.status == "error" and victim.read_text() == "precious"


def test_os_system_and_popen_are_blocked(tmp_path):
    for call in ("os.system", "os.popen"):
        marker = tmp_path / f"{call}.marker"
        r = _run(f"import os\n{call}('touch {marker}')")
        assert r.status == "error" and "SandboxViolation" in r.stderr_tail, r.stderr_tail
        assert not marker.exists()


def test_file_size_limit_caps_writes_inside():
    r = _run("open('big', 'wb').write(b'x' * (3 * 2**20))",
             SandboxLimits(timeout_s=5.0, memory_mb=256, file_size_mb=1))
    assert r.status == "error" and "File too large" in r.stderr_tail, r.stderr_tail


def test_environment_and_directory_are_fresh_and_removed():
    r = _run("import os, sys\nprint(os.getcwd(), os.environ['HOME'], os.environ['TMPDIR'], sep='|')")
    cwd, home, tmp = r.stdout_tail.strip().split("|")
    assert home == cwd and tmp.startswith(cwd)
    assert not Path(cwd).exists()


def test_pool_runs_programs_in_parallel_but_bounded():
    program = "import time, sys\nstart = time.time()\ntime.sleep(1.0)\nprint({i}, start, time.time())"
    results = run_programs([program.format(i=i) for i in range(6)], LIMITS, max_workers=3)
    assert [r.status for r in results] == ["passed"] * 6
    spans = [tuple(float(x) for x in r.stdout_tail.split()) for r in results]
    assert [int(s[0]) for s in spans] == list(range(6))  # input order kept
    events = sorted([(s[1], 1) for s in spans] + [(s[2], -1) for s in spans])
    running, most = 0, 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    assert 2 <= most <= 3


def test_pool_mixes_outcomes_and_validates_arguments():
    results = run_programs(["pass", "assert False", "while True: pass"],
                           SandboxLimits(timeout_s=1.0, memory_mb=256), max_workers=2)
    assert [r.status for r in results] == ["passed", "failed", "timeout"]
    assert run_programs([], LIMITS) == []
    with pytest.raises(ValueError, match="max_workers"):
        run_programs(["pass"], LIMITS, max_workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=8)


def test_hash_seed_is_fixed_so_verdicts_are_reproducible():
    """`python -I` ignored PYTHONHASHSEED: a solution that depends on set order passed or failed
    at random. The child's hash seed is now fixed (0)."""
    program = ("import sys\nassert sys.flags.hash_randomization == 0, sys.flags\n"
               "def uniq(s):\n    return list(set(s.split()))\n\nprint(uniq('ab cd ef gh ij'))\n")
    results = run_programs([program] * 10, LIMITS, max_workers=2)
    assert [r.status for r in results] == ["passed"] * 10, results[0].stderr_tail
    assert len({r.stdout_tail for r in results}) == 1


def test_isolation_from_the_parents_python_environment(tmp_path, monkeypatch):
    """What `-I` gave is kept without it: no user site-packages, no PYTHONPATH or other PYTHON*
    variables from the parent, neither the working directory nor the sandbox's own directory on
    sys.path (a module written into the cwd is not importable), argv is just the program."""
    (tmp_path / "leaked_module.py").write_text("X = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PYTHONSTARTUP", str(tmp_path / "leaked_module.py"))
    import depmask.tasks.benchmarks.sandbox as sandbox

    here = os.path.dirname(os.path.realpath(sandbox.__file__))
    r = _run(f"""
        import os, sys
        assert sys.flags.no_user_site == 1
        assert {str(tmp_path)!r} not in sys.path
        assert "PYTHONPATH" not in os.environ and "PYTHONSTARTUP" not in os.environ
        here = {here!r}
        assert all(os.path.realpath(p or os.getcwd()) not in (here, os.getcwd()) for p in sys.path), sys.path
        open("shadow_me.py", "w").write("X = 1")
        try:
            import shadow_me
        except ImportError:
            pass
        else:
            raise AssertionError("the working directory is on sys.path")
        for name in ("leaked_module", "sandbox", "code_exec"):
            try:
                __import__(name)
            except ImportError:
                continue
            raise AssertionError(name + " is importable")
        assert sys.argv == ["program.py"], sys.argv
    """)
    assert r.status == "passed", r.stderr_tail


@pytest.mark.parametrize("kwargs, message", [
    ({"memory_mb": 1024.5}, r"`memory_mb` \(1024.5\) must be a whole number of MB"),
    ({"file_size_mb": 1.5}, r"`file_size_mb` \(1.5\) must be a whole number of MB"),
    ({"max_processes": 2.5}, r"`max_processes` \(2.5\) must be a whole number"),
    ({"timeout_s": float("inf")}, r"`timeout_s` \(inf\) must be > 0 and finite \(seconds\)"),
    ({"timeout_s": float("nan")}, r"`timeout_s` \(nan\) must be > 0 and finite \(seconds\)"),
    ({"timeout_s": 0}, r"`timeout_s` \(0\) must be > 0 and finite \(seconds\)"),
])
def test_limits_that_setrlimit_cannot_take_are_refused_when_built(kwargs, message):
    """They were accepted, then every program was graded `error` (setrlimit's TypeError) or the
    grade itself raised (OverflowError)."""
    with pytest.raises(ValueError, match=message):
        SandboxLimits(**kwargs)


def test_integral_float_limits_from_yaml_become_ints():
    limits = SandboxLimits(timeout_s=5, memory_mb=4e3, file_size_mb=16.0, max_processes=8.0)
    assert (limits.memory_mb, limits.file_size_mb, limits.max_processes) == (4000, 16, 8)
    assert all(type(v) is int for v in (limits.memory_mb, limits.file_size_mb, limits.max_processes))
    assert run_program("assert 1 + 1 == 2", SandboxLimits(timeout_s=5.0, memory_mb=256.0)).status == "passed"


def test_an_interrupt_while_waiting_kills_and_reaps_the_program(monkeypatch):
    """Ctrl-C during the wait left the program running (the group kill was not in a finally)."""
    import depmask.tasks.benchmarks.sandbox as sandbox

    started = {}

    def interrupted(proc, timeout):
        started["pid"] = proc.pid
        time.sleep(0.2)  # let the child get going
        raise KeyboardInterrupt

    monkeypatch.setattr(sandbox, "_wait_unreaped", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_program("import time\ntime.sleep(60)", SandboxLimits(timeout_s=30.0, memory_mb=256))
    _assert_group_gone(started["pid"])  # zombies count as members: gone means killed and reaped


def test_a_descriptor_names_its_file_and_libraries_that_import_ctypes_load():
    """`os.chmod(fd, 0)` on a descriptor opened read-only outside the directory passed the write
    guard (an int path was not checked); `sympy` failed to import (ctypes was blocked whole) while
    libc's `fork` through ctypes must stay refused."""
    import tempfile

    with tempfile.NamedTemporaryFile() as victim:
        os.chmod(victim.name, 0o644)
        r = _run(f"import os\nos.chmod(os.open({victim.name!r}, os.O_RDONLY), 0)\n")
        assert r.status == "error" and "SandboxViolation" in r.stderr_tail, r.stderr_tail
        assert os.stat(victim.name).st_mode & 0o777 == 0o644
    r = _run("from sympy import isprime\nassert isprime(7) and not isprime(8)\n")
    assert r.status == "passed", r.stderr_tail
    r = _run("import ctypes\nctypes.CDLL(None).system(b'true')\n")
    assert r.status == "error" and "SandboxViolation" in r.stderr_tail, r.stderr_tail


def test_stdout_by_descriptor_is_writable_and_descriptor_functions_are_checked():
    """The descriptor check refused `open(1, "w")` (stdout is a file beside the working directory),
    and `os.fchmod` / `os.fchown` were not guarded at all; libc's `_Fork` and a bytes name passed
    the ctypes guard."""
    import tempfile

    r = _run("import sys\nsys.stdout = open(1, 'w')\nprint('hi', flush=True)\n")
    assert r.status == "passed" and "hi" in r.stdout_tail, r.stderr_tail
    with tempfile.NamedTemporaryFile() as victim:
        os.chmod(victim.name, 0o644)
        r = _run(f"import os\nos.fchmod(os.open({victim.name!r}, os.O_RDONLY), 0)\n")
        assert r.status == "error" and "SandboxViolation" in r.stderr_tail, r.stderr_tail
        assert os.stat(victim.name).st_mode & 0o777 == 0o644
    for lookup in ("libc._Fork", "libc[b'fork']"):
        r = _run(f"import ctypes\nlibc = ctypes.CDLL(None)\n{lookup}\n")
        assert r.status == "error" and "SandboxViolation" in r.stderr_tail, (lookup, r.stderr_tail)


def test_a_replaced_os_write_cannot_rewrite_the_status_and_stdout_opens_by_path():
    r = _run("import os\n_w = os.write\nos.write = lambda fd, b: _w(fd, b.replace(b' assertion', b' ok'))\n"
             "assert 1 == 2\n")
    assert r.status == "failed", r.stderr_tail
    r = _run("with open('/dev/stdout', 'w') as f:\n    f.write('hi')\n")
    assert r.status == "passed" and "hi" in r.stdout_tail, r.stderr_tail
    r = _run("import ctypes\nctypes.CDLL(None).__open_2\n")  # glibc's fortified open
    assert r.status == "error" and "SandboxViolation" in r.stderr_tail, r.stderr_tail
