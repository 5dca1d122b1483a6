"""`hoist_future_imports`: a program's `from __future__ import ...` statements moved to its top.

A solution's own future import (`from __future__ import annotations`) comes after the prompt's
imports (HumanEval) or MBPP's setup code once the program is assembled, where Python refuses it.
This module only moves lines (`code_benchmark` assembles the program).
"""

from __future__ import annotations

import ast
import io


def hoist_future_imports(program: str) -> str:
    """`program` with its top-level `from __future__ import ...` statements moved to the top, where
    Python requires them: a solution's own (`from __future__ import annotations`) followed the
    prompt's imports or MBPP's setup code, and a right answer failed with a SyntaxError. Found by
    parsing (a parenthesised or continued import moves whole; text in a string stays); a program
    that does not parse is returned as it is."""
    if "__future__" not in program:
        return program
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return program
    spans = [(n.lineno, n.end_lineno) for n in tree.body
             if isinstance(n, ast.ImportFrom) and n.module == "__future__" and n.level == 0]
    if not spans or spans[0][0] == 1 and all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:])):
        return program  # already first
    lines = io.StringIO(program, newline="").readlines()  # ast's line ends (`splitlines` also splits at \f, U+2028)
    moved = {i for a, b in spans for i in range(a - 1, b)}
    head = [lines[i] if lines[i].endswith("\n") else lines[i] + "\n" for i in sorted(moved)]
    return "".join(head + [line for i, line in enumerate(lines) if i not in moved])
