"""Details of the code-benchmark grading path that the broader tests leave open: the limits the
sandboxed child really runs under, guards on less common write paths, how outcomes map to
statuses, what a code benchmark passes to the sandbox, and a few completion shapes.

Every program run here is tiny and bounded on its own (no memory or fork bombs): limits are read
back from `/proc/self/limits` instead of being provoked.
"""

from __future__ import annotations

import json
import signal
import textwrap

import pytest

from depmask.tasks.benchmarks import MBPP, HumanEval, extract_code, strip_fences
from depmask.tasks.benchmarks.future_imports import hoist_future_imports
from depmask.tasks.benchmarks.sandbox import (
    SandboxLimits,
    _read_outcome,
    _status,
    _user_tasks,
    run_program,
)
from tests.tasks.benchmark_rows import _jsonl

LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=256, file_size_mb=2)


def _run(source: str, limits: SandboxLimits = LIMITS):
    return run_program(textwrap.dedent(source), limits)


def _runs(code: str) -> dict:
    scope: dict = {}
    exec(compile(code, "<test>", "exec"), scope)  # trusted, hand-written code only
    return scope


READ_LIMITS = """
    import json
    limits = {}
    for line in open("/proc/self/limits"):
        for name in ("Max cpu time", "Max file size", "Max core file size", "Max processes", "Max address space"):
            if line.startswith(name):
                limits[name] = line[len(name):].split()[:2]
    print(json.dumps(limits))
"""


# ---- the child's resource limits -----------------------------------------------------------------

def test_every_resource_limit_is_set_hard_in_the_child():
    """Memory, file size, CPU time, process count and core size are set with hard = soft (a program
    cannot raise them back), and the CPU clock runs behind the wall-time kill, never before it."""
    r = _run(READ_LIMITS)
    assert r.status == "passed", r.stderr_tail
    got = json.loads(r.stdout_tail)
    assert got["Max address space"] == [str(256 * 2**20)] * 2
    assert got["Max file size"] == [str(2 * 2**20)] * 2
    assert got["Max core file size"] == ["0", "0"]
    soft, hard = got["Max cpu time"]
    assert soft == hard != "unlimited" and int(soft) > LIMITS.timeout_s
    soft, hard = got["Max processes"]  # the user's threads at launch + `max_processes`, not the inherited cap
    tasks = _user_tasks()
    if tasks:
        assert soft == hard != "unlimited" and int(soft) <= tasks + LIMITS.max_processes + 500, (soft, tasks)


def test_the_resource_module_cannot_be_imported():
    """The limits stay as set: `import resource` fails inside the program."""
    r = _run("import resource\n")
    assert r.status == "error" and "ModuleNotFoundError" in r.stderr_tail, r.stderr_tail


def test_a_code_benchmark_hands_its_own_limits_to_the_sandbox(tmp_path):
    """`HumanEval(timeout_s=..., memory_mb=...)` reaches the child (not the SandboxLimits defaults
    of 10 s / 2048 MB)."""
    row = {"task_id": "HumanEval/0", "prompt": "def limits():\n    \"\"\"the child's limits\"\"\"\n",
           "canonical_solution": "", "entry_point": "limits",
           "test": "def check(c):\n    space, cpu = c()\n    assert space == 200 * 2**20, space\n"
                   "    assert 1 < cpu < 10, cpu\n"}
    bench = HumanEval(path=_jsonl(tmp_path / "he.jsonl", [row]), timeout_s=2.0, memory_mb=200, max_workers=1)
    body = ("    got = {}\n    for line in open('/proc/self/limits'):\n"
            "        got[' '.join(line.split()[:3])] = line.split()[3]\n"
            "    return int(got['Max address space']), int(got['Max cpu time'])\n")
    (ex,) = bench.examples("test")
    grade = bench.grade_one(ex, body)
    assert grade.correct and grade.status == "passed", grade.detail


# ---- write guards on less common paths --------------------------------------------------------

WRITES_OUTSIDE = {
    "exclusive create": "open(P, 'x').write('x')",
    "os.open read-write": "import os\nos.write(os.open(P, os.O_RDWR), b'pwned')",
    "os.truncate": "import os\nos.truncate(P, 0)",
    "os.replace": "import os\nopen('inside', 'w').write('pwned')\nos.replace('inside', P)",
}


@pytest.mark.parametrize("name", sorted(WRITES_OUTSIDE))
def test_less_common_writes_to_an_existing_file_outside_are_refused(tmp_path, name):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    r = _run(f"P = {str(victim)!r}\n" + WRITES_OUTSIDE[name])
    assert r.status == "error" and ("SandboxViolation" in r.stderr_tail or "FileExistsError" in r.stderr_tail), \
        r.stderr_tail
    assert victim.read_text() == "precious"
    r = _run(f"P = {str(tmp_path / 'new.txt')!r}\n" + WRITES_OUTSIDE[name].replace("os.O_RDWR", "os.O_RDWR | os.O_CREAT"))
    assert r.status == "error" and not (tmp_path / "new.txt").exists()


def test_a_sibling_of_the_working_directory_is_outside():
    """Inside means under the directory, not a path that merely starts with its name."""
    r = _run("import os\nopen(os.getcwd() + '-sibling', 'w').write('x')\n")
    assert r.status == "error" and "SandboxViolation" in r.stderr_tail, r.stderr_tail


# ---- outcomes and statuses ----------------------------------------------------------------------

def test_the_program_runs_as_main_and_the_exit_code_follows_the_verdict():
    """Test code under `if __name__ == "__main__":` runs (a failing check there fails), and the
    child's exit code is 0 only for a pass."""
    r = _run("if __name__ == '__main__':\n    assert 1 + 1 == 3\n")
    assert r.status == "failed" and not r.passed
    assert r.returncode != 0
    ok = _run("assert __name__ == '__main__'\n")
    assert ok.status == "passed" and ok.returncode == 0, ok.stderr_tail


def test_status_of_a_program_that_died_without_reporting():
    """No status line: killed by the CPU clock → timeout; a MemoryError on stderr → memory; any
    other death → error. A stale or foreign status line is not the program's outcome."""
    assert _status(None, False, -signal.SIGXCPU, "") == "timeout"
    assert _status(None, False, -signal.SIGKILL, "") == "error"
    assert _status(None, False, 1, "Traceback ...\nMemoryError\n") == "memory"
    assert _status(None, False, 1, "Traceback ...\nKeyError: 1\n") == "error"
    assert _status("ok", True, -signal.SIGKILL, "") == "timeout"
    assert _status("exit:0", False, 1, "") == "error"


def test_only_a_status_line_with_this_runs_nonce_counts(tmp_path):
    status = tmp_path / "status"
    status.write_text("0123abcd ok\n")
    assert _read_outcome(status, "0123abcd") == "ok"
    assert _read_outcome(status, "ffff0000") is None
    status.write_text("0123abcd\n")
    assert _read_outcome(status, "0123abcd") is None
    assert _read_outcome(tmp_path / "missing", "0123abcd") is None


def test_stderr_tail_keeps_the_end_of_a_long_error_output():
    """The traceback is at the end: a flood of output before it must not push it out."""
    r = _run("import sys\nsys.stderr.write('x' * 20000 + '\\n')\nraise KeyError('the-real-error')\n")
    assert r.status == "error"
    assert "the-real-error" in r.stderr_tail and len(r.stderr_tail) <= 4000


@pytest.mark.parametrize("kwargs, message", [
    ({"max_processes": -1}, r"`max_processes` \(-1\) must be >= 0"),
    ({"file_size_mb": 0}, r"`file_size_mb` \(0\) must be >= 1"),
    ({"timeout_s": True}, r"`timeout_s` \(True\) must be a number, not bool"),
    ({"memory_mb": False}, r"`memory_mb` \(False\) must be a number, not bool"),
])
def test_limits_out_of_range_or_boolean_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SandboxLimits(**kwargs)


# ---- benchmark verdicts -------------------------------------------------------------------------

def test_a_timed_out_solution_is_not_correct(tmp_path):
    row = {"task_id": "HumanEval/0", "prompt": "def f():\n    \"\"\"one\"\"\"\n", "canonical_solution": "",
           "entry_point": "f", "test": "def check(c):\n    assert c() == 1\n"}
    bench = HumanEval(path=_jsonl(tmp_path / "he.jsonl", [row]), timeout_s=1.0, memory_mb=256, max_workers=1)
    (ex,) = bench.examples("test")
    grade = bench.grade_one(ex, "    while True:\n        pass\n")
    assert grade.status == "timeout" and not grade.correct
    assert bench.grade_one(ex, "    return 1\n").correct
    # the grade's detail is the end of stderr, where the traceback is
    noisy = bench.grade_one(ex, "    import sys\n    sys.stderr.write('x' * 5000)\n    raise KeyError('the-real-error')\n")
    assert noisy.status == "error" and "the-real-error" in noisy.detail, noisy.detail


def test_text_after_mbpps_stop_string_is_not_part_of_the_solution(tmp_path):
    """`[DONE]` ends an MBPP answer: a reassignment after it (here parseable Python) is not setup."""
    row = {"task_id": 11, "text": "Return the scale.", "code": "def f():\n    return 2",
           "test_list": ["assert f() == 2"], "test_setup_code": "", "challenge_test_list": []}
    bench = MBPP(path=_jsonl(tmp_path / "mbpp.jsonl", [row]), shots=0, max_workers=1, timeout_s=5.0)
    (ex,) = bench.examples("test")
    completion = "SCALE = 2\n\ndef f():\n    return SCALE\n[DONE]\nSCALE = 3\n"
    assert "SCALE = 3" not in bench.solution(ex, completion)
    assert bench.grade_one(ex, completion).status == "passed"


# ---- future imports ------------------------------------------------------------------------------

def test_every_future_import_moves_to_the_top_and_a_last_line_keeps_its_own_line():
    program = "from __future__ import annotations\nimport os\nfrom __future__ import division\nx = 1\n"
    moved = hoist_future_imports(program)
    assert moved.startswith("from __future__ import annotations\nfrom __future__ import division\n")
    assert _runs(moved)["x"] == 1
    tail = hoist_future_imports("x = 1\nfrom __future__ import annotations")
    assert tail.splitlines() == ["from __future__ import annotations", "x = 1"]
    assert _runs(tail)["x"] == 1


# ---- completion shapes ---------------------------------------------------------------------------

HE_PROMPT = 'def f():\n    """one"""\n'


def test_without_a_defining_block_an_unlabelled_fence_beats_other_languages_then_the_first_wins():
    """No block defines the entry point: the first python/unlabelled block is the code (a body
    continuation fenced without a language after an example in another one); among only other
    languages, the first block."""
    answer = "```text\nexample output: 1\n```\n```\n    return 1\n```\n"
    assert _runs(extract_code(answer, ["f"], HE_PROMPT))["f"]() == 1
    assert strip_fences("```ipython\nA = 1\n```\n```text\nB\n```\n") == "A = 1\n"


def test_an_indented_fence_is_dedented_even_when_it_defines_no_entry_point():
    """A fence nested in a markdown list is dedented for a full answer (no prompt to continue),
    whatever it defines: `f = lambda ...` is a definition too."""
    answer = "1. The code:\n   ```python\n   f = lambda x: x + 1\n   ```\n"
    assert strip_fences(answer) == "f = lambda x: x + 1\n"
    assert _runs(extract_code(answer, ["f"]))["f"](1) == 2


def test_an_async_definition_is_preferred_and_a_decorator_is_kept():
    text = "```python\nprint(1)\n```\n```python\nasync def f():\n    return 1\n```\n"
    assert strip_fences(text, prefer=["f"]).startswith("async def f")
    answer = ("import functools\n\n@functools.lru_cache(maxsize=None)\ndef fib(n):\n"
              "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint(fib(10))\n")
    code = extract_code(answer, ["fib"])
    assert "@functools.lru_cache(maxsize=None)" in code and "print(" not in code
    assert _runs(code)["fib"](200) == 280571172992510140037611932413038677189525  # memoised: instant


def test_a_function_rewrapped_by_an_imported_name_is_kept():
    """`fib = lru_cache(None)(fib)` with `lru_cache` imported by name (no module attribute to
    count as setup) is kept: the tests call the memoised function."""
    answer = ("from functools import lru_cache\n\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n"
              "fib = lru_cache(maxsize=None)(fib)\n")
    code = extract_code(answer, ["fib"])
    assert "fib = lru_cache(maxsize=None)(fib)" in code
    assert _runs(code)["fib"].cache_info().maxsize is None


def test_a_models_own_asserts_and_main_guard_are_dropped_even_when_they_call_a_module():
    """An example `assert math.isclose(...)` (wrong expectation: a right function would fail) and a
    `__main__` guard running `unittest.main()` call into imported modules, which otherwise marks a
    statement as setup; they are never kept."""
    answer = ("import math\nimport unittest\n\ndef area(r):\n    return math.pi * r * r\n\n"
              "assert math.isclose(area(1), 3.0)\n\n"
              "class T(unittest.TestCase):\n    def test(self):\n        self.assertTrue(area(1) > 3)\n\n"
              "if __name__ == '__main__':\n    unittest.main()\n")
    code = extract_code(answer, ["area"])
    assert "assert" not in code and "__main__" not in code and "unittest.main" not in code
    assert _runs(code)["area"](1) == pytest.approx(3.14159, abs=1e-4)


@pytest.mark.parametrize("tail", [
    "import unittest as ut\nut.main()\n",
    "from unittest import main as run_tests\nrun_tests()\n",
    "import sys as system\nsystem.exit(0)\n",
    "import time\ntime.sleep(60)\n",
    "from time import sleep\nsleep(60)\n",
])
def test_a_runner_exit_or_sleep_under_another_name_is_not_setup(tail):
    """Exits, test runners and waits are matched through the completion's import aliases: an
    aliased `ut.main()` (which parses the sandbox's argv and exits before the tests) or a top-level
    `time.sleep(60)` (a timeout) were kept as setup of an imported module, and a right answer
    graded wrong."""
    answer = "def double(x):\n    return 2 * x\n\n" + tail
    code = extract_code(answer, ["double"])
    assert tail.splitlines()[-1] not in code, code
    assert _runs(code)["double"](3) == 6
