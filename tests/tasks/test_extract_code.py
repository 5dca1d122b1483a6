"""Code completions post-processed to the program that is graded (HumanEval / MBPP shapes), on
hand-written completions; the hand-written programs are run in-process, not in the sandbox."""

from __future__ import annotations

import ast

import pytest

from depmask.tasks.benchmarks import called_names, extract_code, strip_fences, truncate_at

PROMPT = '''from typing import List


def is_even(n: int) -> bool:
    """helper the tests may call"""
    return n % 2 == 0


def count_even(xs: List[int]) -> int:
    """Count the even numbers.
    >>> count_even([1, 2, 4])
    2
    """
'''


BODY = "    return sum(1 for x in xs if is_even(x))\n"


def _defs(code: str) -> list[str]:
    return [n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def _runs(code: str) -> dict:
    scope: dict = {}
    exec(compile(code, "<test>", "exec"), scope)  # trusted, hand-written code only
    return scope


def test_body_continuation_is_cut_at_the_next_top_level_statement():
    completion = BODY + "\n\nprint(count_even([2]))\nif __name__ == '__main__':\n    main()\ndef other(:"
    code = extract_code(completion, ["count_even"], PROMPT)
    assert "print(" not in code and "__main__" not in code and "other" not in code
    assert code.startswith("from typing import List")
    assert _defs(code) == ["is_even", "count_even"]  # the prompt's helper is kept
    assert _runs(code)["count_even"]([1, 2, 4]) == 2


@pytest.mark.parametrize("after", [
    "```\n\nThis function counts the even numbers.\n",
    "```\n\nExample:\n```python\nprint(count_even([2]))\n```\n",
    "\n```",
])
def test_body_continuation_ends_at_its_closing_fence(after):
    """A base model continuing the prompt closes the prompt's (unseen) fence; that fence was read
    as an opening one and the body was dropped for the prose after it."""
    code = extract_code(BODY + after, ["count_even"], PROMPT)
    assert "print(" not in code
    assert _runs(code)["count_even"]([1, 2, 4]) == 2


def test_fenced_answers_still_win_over_prose_before_them():
    fenced_first = "```python\ndef count_even(xs):\n    return 7\n```\n\nThis returns 7.\n```\nmore\n```"
    assert _runs(extract_code(fenced_first, ["count_even"], PROMPT))["count_even"]([]) == 7
    assert _runs(extract_code("\n\n" + fenced_first, ["count_even"], PROMPT))["count_even"]([]) == 7
    prose_first = "Here:\n```python\ndef count_even(xs):\n    return 8\n```\nDone."
    assert _runs(extract_code(prose_first, ["count_even"], PROMPT))["count_even"]([]) == 8
    # a full definition (MBPP's `[BEGIN]` protocol) closed by a fence, prose after it
    plain = "def f(x):\n    return x + 1\n```\n\nThis adds one:\n```python\nf(1)\n```"
    assert _runs(extract_code(plain, ["f"]))["f"](1) == 2


@pytest.mark.parametrize("ending", [
    "unittest.main()", "sys.exit(0)", "sys.exit()", "exit()", "quit()", "os._exit(0)",
])
def test_top_level_exits_and_unittest_main_are_dropped(ending):
    """`unittest.main()` parses the sandbox's argv and exits, `sys.exit(...)` ends the program
    before the tests: both were kept as setup (a call on an imported module) and graded error."""
    completion = ("```python\nimport os\nimport sys\nimport unittest\nsys.setrecursionlimit(5000)\n\n"
                  "def f(x):\n    return x\n\n\nclass T(unittest.TestCase):\n    def test(self):\n"
                  f"        self.assertEqual(f(1), 1)\n\n{ending}\n```")
    code = extract_code(completion, ["f"])
    assert ending not in code
    assert "sys.setrecursionlimit(5000)" in code  # legitimate setup stays


def test_a_later_copy_of_the_function_loses_and_garbage_is_dropped():
    completion = BODY + "\n\ndef count_even(xs):\n    return -1\n\nclass Broken(:\n"
    assert _runs(extract_code(completion, ["count_even"], PROMPT))["count_even"]([2, 4]) == 2


def test_markdown_full_definition_keeps_needed_imports_and_helpers():
    completion = (
        "Here is my solution:\n\n```python\nimport math\nfrom collections import Counter\n\n"
        "def _square(x):\n    return x * x\n\n\ndef unused():\n    return 0\n\n\n"
        "def count_even(xs):\n    return sum(1 for x in xs if is_even(x)) + 0 * _square(math.floor(1.5))\n\n"
        "print(count_even([1, 2]))\nassert count_even([]) == 0\n```\n\nThis works because ...\n```python\nprint(1)\n```"
    )
    code = extract_code(completion, ["count_even"], PROMPT)
    assert "import math" in code and "from typing import List" in code
    assert "print(" not in code and "assert" not in code and "unused" not in code
    assert set(_defs(code)) == {"is_even", "_square", "count_even"}  # helper from the prompt too
    assert _runs(code)["count_even"]([1, 2, 4]) == 2


def test_unfenced_full_definition_after_prose_and_unclosed_fence():
    prose = "Sure, the function is:\ndef count_even(xs):\n    return len([x for x in xs if x % 2 == 0])\nI hope it helps."
    assert _runs(extract_code(prose, ["count_even"], PROMPT))["count_even"]([2, 3]) == 1
    unclosed = "```python\ndef count_even(xs):\n    return 5\n"
    assert _runs(extract_code(unclosed, ["count_even"], PROMPT))["count_even"]([]) == 5


def test_mbpp_style_entry_points_from_tests_and_class_and_constant_kept():
    tests = ["assert area(2) == 12", "assert math.isclose(area(1), 3)", "assert set(pairs([1])) == set()"]
    assert called_names(tests) == ["area", "pairs"]
    completion = ("SCALE = 3\n\nclass Shape:\n    k = 4\n\n\ndef area(r):\n    return SCALE * Shape.k * r * r // 4\n\n"
                  "def pairs(xs):\n    return [(a, b) for a in xs for b in xs if a < b]\n\nprint(area(2))\n[DONE]")
    code = extract_code(truncate_at(completion, ["[DONE]"]), called_names(tests))
    scope = _runs(code)
    assert scope["area"](2) == 12 and scope["pairs"]([1]) == [] and "print" not in code


def test_strip_fences_prefers_the_block_defining_the_entry_point():
    text = "```bash\npip install x\n```\n```python\nprint(1)\n```\n```python\ndef f():\n    pass\n```"
    assert strip_fences(text, prefer=["f"]).startswith("def f")
    assert strip_fences(text).startswith("print(1)")
    assert strip_fences("no fences") == "no fences"


def test_garbage_gives_a_program_without_the_function():
    code = extract_code("%%% ((( not python", ["count_even"], PROMPT)
    assert _defs(code) == ["is_even", "count_even"]  # only the prompt's stub: tests will fail
    assert _runs(code)["count_even"]([2]) is None
    assert extract_code("@@@", ["f"]).strip() == ""


@pytest.mark.parametrize("completion, call, expected", [
    # a table filled by a top-level loop (it was kept empty: IndexError)
    ("fib = [0, 1]\nfor i in range(2, 50):\n    fib.append(fib[-1] + fib[-2])\n\ndef fibonacci(n):\n    return fib[n]\n",
     "fibonacci(9)", 34),
    # a guarded import (the name it binds was dropped: NameError)
    ("try:\n    from math import gcd\nexcept ImportError:\n    from fractions import gcd\n\n"
     "def lcm(a, b):\n    return a * b // gcd(a, b)\n", "lcm(4, 6)", 12),
    # a method call and a later reassignment that set up a kept name
    ("TABLE = {}\nTABLE.update({i: i * i for i in range(10)})\nSCALE = 1\nSCALE += 1\n\n"
     "def sum_sq(n):\n    return SCALE * sum(TABLE[i] for i in range(1, n + 1))\n", "sum_sq(3)", 28),
    ("import sys\nsys.setrecursionlimit(5000)\n\ndef depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n",
     "depth(2000)", 2000),
])
def test_setup_statements_the_solution_needs_are_kept(completion, call, expected):
    name = call.split("(")[0]
    code = extract_code(completion + "\nprint(" + call + ")\nassert " + call + " == -1\nn = int(input())\n", [name])
    assert "print(" not in code and "assert" not in code and "input(" not in code
    assert eval(call, _runs(code)) == expected  # trusted, hand-written code only


# ---- shapes a decoder produces that were graded wrong ------------------------------------------

def test_a_degenerate_line_is_unparseable_garbage_not_a_crash():
    """`ast.parse` raises RecursionError on ~3,000 `-` before an operand and MemoryError on ~6,000
    without one (a repeated dash token, an ASCII table rule): grading raised, the eval aborted, and a
    resume decoded the same completion and crashed again."""
    for tail in ("-" * 3000 + "1", "-" * 6000, "+" + "-" * 7000 + "+"):
        code = extract_code(BODY + tail + "\n", ["count_even"], PROMPT)
        assert _runs(code)["count_even"]([1, 2, 4]) == 2
        assert extract_code("def f():\n    return 1\n" + tail, ["f"]).startswith("def f")


def test_a_fence_indented_in_a_markdown_list_is_dedented():
    answer = "2. Code:\n   ```python\n   def count_even(xs):\n       return sum(x % 2 == 0 for x in xs)\n   ```\n"
    assert _runs(extract_code(answer, ["count_even"]))["count_even"]([1, 2, 4]) == 2
    assert _runs(extract_code(answer, ["count_even"], PROMPT))["count_even"]([1, 2, 4]) == 2
    # a fenced body that continues the prompt keeps its own indentation
    fenced_body = "```python\n" + BODY + "```\n"
    assert _runs(extract_code(fenced_body, ["count_even"], PROMPT))["count_even"]([1, 2, 4]) == 2


def test_a_tuple_assignment_can_start_the_code():
    answer = ("Here it is:\n```python\nNAMES, OTHER = ['zero', 'one', 'two'], None\n\n"
              "def digit_name(d):\n    return NAMES[d]\n```\n")
    assert _runs(extract_code(answer, ["digit_name"]))["digit_name"](2) == "two"


def test_a_module_call_nested_in_example_usage_is_not_setup():
    """`print(f(math.floor(7.5)))` was kept as setup of `math` (a call on a module anywhere in the
    statement) and ran before the tests."""
    answer = ("import math\n\nNAMES = ['a', 'b']\n\ndef pick(i):\n    return NAMES[i]\n\n"
              "print(pick(math.floor(7.5)))\nmath.sqrt(4)\n")
    code = extract_code(answer, ["pick"])
    assert "print(" not in code and "math.sqrt(4)" in code  # a call statement on a module stays
    assert _runs(code)["pick"](1) == "b"


@pytest.mark.parametrize("prose", ["So, x = 5 here is the idea.", "Here, n = len(xs) is the count.",
                                   "Note: a, b = b, a swaps them.", "(a, b) = (1, 2) means a is 1."])
def test_prose_that_looks_like_an_assignment_does_not_hide_the_definition(prose):
    """The first line that looked like code started the code; from a prose line nothing parsed and
    the definition below it was lost (the tuple-assignment start made this common)."""
    answer = f"{prose}\n\ndef double(x):\n    return 2 * x\n"
    assert _runs(extract_code(answer, ["double"]))["double"](3) == 6


@pytest.mark.parametrize("setup, call, expected", [
    ("SQ = []\n[SQ.append(i * i) for i in range(10)]\n\ndef sq(i):\n    return SQ[i]\n", "sq(3)", 9),
    ("T = []\nT.append(1) if True else None\n\ndef first():\n    return T[0]\n", "first()", 1),
    ("import functools\n\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n"
     "fib = functools.lru_cache(maxsize=None)(fib)\n", "fib.cache_info().maxsize", None),
])
def test_setup_by_side_effect_and_a_rebound_function_are_kept(setup, call, expected):
    code = extract_code(setup + "\nprint(" + call + ")\n", [call.split("(")[0].split(".")[0]])
    assert "print(" not in code
    assert eval(call, _runs(code)) == expected  # trusted, hand-written code only


def test_future_imports_move_whole_and_strings_stay():
    from depmask.tasks.benchmarks.future_imports import hoist_future_imports

    program = ("from typing import List\nfrom __future__ import (annotations,\n    division)\n\n"
               'HELP = """\nfrom __future__ import braces\n"""\n\ndef f(xs: List[int]) -> int:\n    return len(xs)\n')
    moved = hoist_future_imports(program)
    assert moved.startswith("from __future__ import (annotations,\n    division)\nfrom typing import List\n")
    scope = _runs(moved)
    assert "from __future__ import braces" in scope["HELP"] and scope["f"]([1]) == 1
    assert hoist_future_imports("x = (\n") == "x = (\n"  # not Python: as it is


@pytest.mark.parametrize("completion, name, call, expected", [
    # example usage that calls a method on the solution's result, or a lambda copy after it: dropped
    ("def f(s):\n    return s.split()\n\nf(None).sort()\n", "f", "f('a b')", ["a", "b"]),
    ("def f(n):\n    return n * n\n\n# One-liner alternative:\nf = lambda n: n + n\n", "f", "f(3)", 9),
    # setup through a builtin's arguments: kept
    ("SQ = []\nany(SQ.append(i * i) for i in range(10))\n\ndef f(n):\n    return SQ[n]\n", "f", "f(3)", 9),
    # an import above the prose that precedes the definition: kept
    ("import math\n\nSo, x = 5 here is how.\n\ndef f(n):\n    return math.isqrt(n)\n", "f", "f(10)", 3),
])
def test_usage_is_dropped_and_setup_and_imports_kept(completion, name, call, expected):
    assert eval(call, _runs(extract_code(completion, [name]))) == expected  # trusted, hand-written code only


def test_future_hoisting_counts_lines_as_python_does():
    """`str.splitlines` also splits at U+2028 and form feeds, which Python's line numbers do not:
    the wrong lines were moved."""
    from depmask.tasks.benchmarks.future_imports import hoist_future_imports

    program = "x = 'a\u2028b'\nimport os\nfrom __future__ import annotations\ny = 1  # c\x0cd\n"
    moved = hoist_future_imports(program)
    assert moved.startswith("from __future__ import annotations\nx = 'a\u2028b'\nimport os\n")
    assert _runs(moved)["y"] == 1


@pytest.mark.parametrize("completion, name, call, expected", [
    # a start whose statement continues onto the next lines
    ("Here is my solution.\nPRIMES = [\n    2, 3, 5, 7,\n]\n\ndef f(n):\n    return PRIMES[n]\n", "f", "f(3)", 7),
    # a bracketed import above the prose, and a prose line that begins with "import"
    ("Sure! Below is the code.\nfrom math import (\n    floor,\n    ceil,\n)\n\ndef f(n):\n    return floor(n)\n",
     "f", "f(3)", 3),
    ("No module is needed: no extra\nimport is needed for this task.\n\ndef f(n):\n    return n + 1\n", "f", "f(3)", 4),
    # setup through an attribute or a class method of a kept function or class
    ("def f(n):\n    f.cache[n] = 2 * n\n    return f.cache[n]\n\nf.cache = {}\n", "f", "f(3)", 6),
    ("class S:\n    table = None\n\n    @classmethod\n    def build(cls):\n        cls.table = [i * i for i in range(9)]\n\n"
     "S.build()\n\ndef f(n):\n    return S.table[n]\n", "f", "f(3)", 9),
])
def test_multiline_starts_parsed_imports_and_setup_of_a_kept_object(completion, name, call, expected):
    assert eval(call, _runs(extract_code(completion, [name]))) == expected  # trusted, hand-written code only
