"""Post-process a code completion into the program the tests run against.

A completion comes in one of two shapes:
- a **body continuation** (base models given a HumanEval prompt): the lines that follow the
  prompt's signature and docstring. The program is `prompt + completion`.
- a **full definition** (instruct models, MBPP): a markdown answer or bare code that defines the
  function itself. The program is that code, plus the prompt's imports and helper definitions
  that the code does not define itself.

Either way the text is cut to its longest prefix that parses (diffusion decoders fill a fixed
canvas, so text after the solution is often garbage), and then only what the solution needs is
kept: every top-level import, the definitions (functions, classes, assignments, and names bound
inside a top-level `try` / `if` / `with` / loop, e.g. `try: from math import gcd`) reachable by
name from the entry points and from whatever the prompt defines (tests may call a prompt's
helper), and the top-level statements that set up what is kept: a loop filling a kept table, a
`TABLE.update(...)`, a later `X = ...` or `X += ...`, `sys.setrecursionlimit(...)` (a statement
that assigns to a kept name or calls a method of one, or of an imported module). So a trailing
`if __name__ == "__main__":`, `print(...)`, example calls, asserts, a bare `unittest.main()` or
`sys.exit(...)`, stray prose, a second (broken) copy of the function or an unrelated definition
after it are dropped, and setup code the solution needs is not (it used to be: a table built by a
loop was left empty). A body continuation followed by a closing fence ends at that fence. This
module does not run code (`depmask.tasks.benchmarks.sandbox` does).
"""

from __future__ import annotations

import ast
import itertools
import re
import textwrap
from collections.abc import Iterable, Sequence

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
# where code starts after leading prose: an import, `try:` (a guarded import), def, class,
# decorator or `NAME = ...`
_CODE_START = re.compile(r"^(?:from\s+\S+\s+import\s|import\s|try\s*:\s*$|def\s|async\s+def\s|class\s|@|"
                         r"[A-Za-z_]\w*\s*(?::[^=]+)?=(?!=)|"  # NAME = / NAME: T =
                         r"\(?\*?[A-Za-z_]\w*(?:\s*,\s*\*?[A-Za-z_]\w*)+\s*,?\s*\)?\s*=(?!=))")  # A, *B =


def strip_fences(text: str, prefer: Iterable[str] = (), continues: bool = False) -> str:
    """The code inside markdown fences: the first fenced block that defines one of `prefer`
    (else the first python/unlabelled block, else the first block); an unclosed fence runs to
    the end. Text without fences is returned unchanged.

    When the text before the first fence is itself the code — a body continuing a prompt
    (`continues` and its first line indented) or a definition of one of `prefer` — that fence
    closes it (the prompt's fence, or the `[BEGIN]` of a plain prompt, was opened before the
    completion): the text before it is returned and what follows (prose, examples) is dropped,
    as HumanEval's usual stop sequences (which include ```) would."""
    names = list(prefer)
    head = text.split("```", 1)[0]
    if len(head) < len(text) and head.strip():
        first = next(line for line in head.splitlines() if line.strip())
        if (continues and first[:1] in (" ", "\t")) or any(_defines(head, name) for name in names):
            return head
    # a fence nested in a markdown list is indented with it: its code is dedented (not a body
    # continuing a prompt, whose indentation is its own: that one is kept unless, dedented, it
    # defines one of `prefer`)
    blocks = [(lang.lower(), _unindent(body, names, continues)) for lang, body in _FENCE.findall(text)]
    if not blocks:
        return text
    for _, body in blocks:
        if any(_defines(body, name) for name in names):
            return body
    for lang, body in blocks:
        if lang in ("", "python", "py", "python3"):
            return body
    return blocks[0][1]


def _unindent(body: str, names: Sequence[str], continues: bool) -> str:
    flat = textwrap.dedent(body)
    if flat == body or not continues or any(_defines(flat, name) for name in names):
        return flat
    return body


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", code, re.MULTILINE) is not None


def parse_prefix(code: str) -> tuple[ast.Module, list[str]]:
    """The longest prefix of `code` (whole lines) that parses, with its lines."""
    lines = code.splitlines()
    for end in range(len(lines), 0, -1):
        head = lines[:end]
        try:
            return ast.parse("\n".join(head)), head
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            # RecursionError / MemoryError: the parser's own limits on a degenerate line (thousands
            # of `-` from a repeated token, an ASCII table rule), unparseable like any other garbage
            continue
    return ast.parse(""), []


def _names_used(node: ast.AST) -> set[str]:
    used = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            used.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            root = sub
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name):
                used.add(root.id)
    return used


def _defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, (ast.Try, ast.If, ast.With, ast.For, ast.While)) and not _is_main_guard(node):
        return _bound_inside(node)
    names = []
    for target in targets:
        names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def _bound_inside(node: ast.stmt) -> list[str]:
    """Names a compound statement binds in its body: imports, definitions, assignments."""
    names: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in sub.names if a.name != "*"]
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(sub.name)
        elif isinstance(sub, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
            names += [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    return list(dict.fromkeys(names))


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__name__" in _names_used(node.test)


# top-level calls that end the program (before the tests run), run a test runner that parses the
# sandbox's argv and exits, or only wait: never setup, though `sys.exit` is a call on an imported
# module. Matched through the completion's import aliases (`import unittest as ut`: `ut.main`).
_EXITS = frozenset({"unittest.main", "sys.exit", "os._exit", "exit", "quit", "time.sleep"})


def _dotted(expr: ast.expr, aliases: dict[str, str]) -> str | None:
    """`a.b.c` as text, its first name as the imports bind it (`aliases`: `ut` → `unittest`)."""
    if isinstance(expr, ast.Name):
        return aliases.get(expr.id, expr.id)
    if isinstance(expr, ast.Attribute):
        head = _dotted(expr.value, aliases)
        return None if head is None else f"{head}.{expr.attr}"
    return None


def _import_aliases(node: ast.Import | ast.ImportFrom) -> dict[str, str]:
    """What an import binds: `import unittest as ut` → {ut: unittest}, `from time import sleep` → {sleep: time.sleep}."""
    if isinstance(node, ast.Import):
        return {a.asname: a.name for a in node.names if a.asname}
    return {(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names if node.module and a.name != "*"}


def _is_junk(node: ast.stmt, aliases: dict[str, str]) -> bool:
    """Top-level statements never kept as setup: asserts, the `__main__` guard, a bare
    `unittest.main()` / `sys.exit(...)` / `exit()` / `time.sleep(...)` (see `_EXITS`; names as the
    completion's imports bind them, `aliases`), and anything reading stdin (a script's
    `n = int(input())`)."""
    if isinstance(node, ast.Assert) or _is_main_guard(node):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and _dotted(node.value.func, aliases) in _EXITS:
        return True
    return any(isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "input"
               for sub in ast.walk(node))


def _root(expr: ast.expr) -> str | None:
    while isinstance(expr, (ast.Attribute, ast.Subscript)):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _receiver(call: ast.Call) -> str | None:
    """The name whose method a call statement calls: `X.update(...)` → X,
    `X.setdefault(k, []).append(v)` → X, `sys.setrecursionlimit(...)` → sys; None when the object is
    a plain call's result (`f(None).sort()`, `Solution().m(x)`: example usage, not a change of `f`)."""
    expr: ast.expr = call.func
    while isinstance(expr, (ast.Call, ast.Attribute, ast.Subscript)):
        if isinstance(expr, ast.Call):
            if isinstance(expr.func, ast.Name):
                return None
            expr = expr.func
        else:
            expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _writes(node: ast.stmt, skip_calls: set[str] = frozenset()) -> tuple[set[str], set[str]]:  # type: ignore[assignment]
    """(names a statement rebinds, names whose object it changes): plain assignment targets (`X = `,
    `X += `); and the roots of item and attribute targets (`X[i] = `, `f.cache = `) and the objects
    whose methods it calls (`X.update(...)`, `[SQ.append(i) for i in ...]`, `any(SQ.append(i) for
    ...)`, `S.build()`, `sys.setrecursionlimit(...)`). The arguments of a call of `print` or of a
    name in `skip_calls` (the solution's own functions) change nothing here: `print(f(math.floor(7.5)))`
    is example usage, not setup of `math`."""
    rebound, changed = set(), set()
    stack: list[ast.AST] = [node]
    while stack:
        sub = stack.pop()
        if isinstance(sub, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in sub.targets if isinstance(sub, ast.Assign) else [sub.target]:
                for one in target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]:
                    (rebound if isinstance(one, ast.Name) else changed).add(_root(one))
        elif isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Name) and (sub.func.id == "print" or sub.func.id in skip_calls):
                continue
            if isinstance(sub.func, ast.Attribute):
                changed.add(_receiver(sub))
        stack.extend(ast.iter_child_nodes(sub))
    rebound.discard(None)
    changed.discard(None)
    return rebound, changed


def _rewraps(node: ast.stmt, names: set[str]) -> set[str]:
    """Kept functions a statement rebinds to a value built from themselves (`f = lru_cache(None)(f)`,
    `f = deco(f)`): setup. A new value (`f = lambda n: n + n`, a second version) is not."""
    if not isinstance(node, ast.Assign):
        return set()
    targets = {t.id for t in node.targets if isinstance(t, ast.Name)} & names
    return targets & _names_used(node.value)


def _source(node: ast.stmt, lines: Sequence[str]) -> str:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(lines[first - 1 : node.end_lineno])


class _Module:
    """Top-level statements of one parsed source, split into imports, definitions and the rest
    (candidate setup statements)."""

    def __init__(self, code: str):
        tree, self.lines = parse_prefix(code)
        self.imports: list[str] = []
        self.modules: set[str] = set()  # names the imports bind
        self.defs: dict[str, tuple[ast.stmt, str]] = {}  # first definition of each name wins
        self.setup: list[tuple[ast.stmt, str]] = []  # other statements, kept if they change a kept name
        aliases: dict[str, str] = {}  # what the imports so far bind each name to
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imports.append(_source(node, self.lines))
                self.modules.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
                aliases.update(_import_aliases(node))
                continue
            if _is_junk(node, aliases):
                continue
            names = _defined_names(node)
            new = [n for n in names if n not in self.defs]
            for name in new:
                self.defs[name] = (node, _source(node, self.lines))
            redefines_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if not new and not redefines_function:  # a later copy of a function loses; other statements may set up
                self.setup.append((node, _source(node, self.lines)))


def select_definitions(modules: Sequence[_Module], roots: Iterable[str]) -> str:
    """Imports of every module, then the definitions reachable from `roots` (earlier modules'
    definitions first: a name is taken from the *last* module that defines it)."""
    owner: dict[str, tuple[int, ast.stmt, str]] = {}
    for i, module in enumerate(modules):
        for name, (node, text) in module.defs.items():
            owner[name] = (i, node, text)
    keep: dict[int, tuple[int, int, str]] = {}  # id(node) -> (module, line, text)
    todo = [r for r in roots if r in owner]
    seen: set[str] = set()
    modules_bound = set().union(*(m.modules for m in modules)) if modules else set()
    setup = [(i, node, text) for i, module in enumerate(modules) for node, text in module.setup]
    while todo:
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            i, node, text = owner[name]
            keep[id(node)] = (i, node.lineno, text)
            todo += [n for n in _names_used(node) if n in owner and n not in seen]
        # setup statements that change a kept name (data it fills, a function it wraps) or call into
        # an imported module join, with whatever they use
        functions = {n for n in seen if isinstance(owner[n][1], (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        data = seen - functions
        for i, node, text in setup:
            if id(node) in keep:
                continue
            rebound, changed = _writes(node, functions)
            if rebound & (data | modules_bound) or changed & (seen | modules_bound) or _rewraps(node, functions):
                keep[id(node)] = (i, node.lineno, text)
                todo += [n for n in _names_used(node) if n in owner and n not in seen]
    imports: list[str] = []
    for module in modules:
        imports += [imp for imp in module.imports if imp not in imports]
    body = [text for _, _, text in sorted(keep.values())]
    return "\n".join(imports) + ("\n\n\n" if imports and body else "") + "\n\n\n".join(body) + "\n"


def extract_code(completion: str, entry_points: Sequence[str], prompt: str = "") -> str:
    """The program text for a completion that should define `entry_points`.

    Args:
        completion: the decoded model output (markdown fences allowed).
        entry_points: the names the tests call (HumanEval: the entry point; MBPP: the functions
            named in the test asserts).
        prompt: code the completion continues (HumanEval's signature + docstring); empty for MBPP.
            Everything it defines is kept (tests may call its helpers directly).
    """
    code = strip_fences(completion, prefer=entry_points, continues=bool(prompt))
    lines = code.splitlines()
    first = next((line for line in lines if line.strip()), "")
    continues = bool(prompt) and first[:1] in (" ", "\t")
    if not continues and any(_defines(code, name) for name in entry_points):  # a full definition
        modules = [_Module(prompt)] if prompt else []
        modules.append(_code_after_prose(lines, entry_points))
    else:  # a body continuation of the prompt (a later copy of the function loses: first wins)
        modules = [_Module(prompt + code)]
    roots = [*entry_points, *_Module(prompt).defs] if prompt else list(entry_points)
    return select_definitions(modules, roots)


def _code_after_prose(lines: list[str], entry_points: Sequence[str], tries: int = 8) -> _Module:
    """The code of a full definition after leading prose: from the first line that looks like code
    (`_CODE_START`) and from which an entry point is defined. Prose can look like code too ("So,
    x = 5 here", "Note: a, b = ..."): from such a line nothing parses, and the definition below it
    was lost. A start is tried only if its statement parses from that line (or opens a block); the
    import statements above a later start that parse are kept (`import math`, prose, then the
    definition)."""
    starts = list(itertools.islice((i for i, line in enumerate(lines)
                                    if _CODE_START.match(line) and _opens_code(lines, i)), tries))
    first = None
    for start in starts or [0]:
        module = _Module("\n".join(_imports_above(lines, start) + lines[start:]))
        if any(name in module.defs for name in entry_points):
            return module
        first = first or module
    return first


def _statement_at(lines: list[str], i: int, most: int = 200) -> str | None:
    """The statement starting at line `i` (with the lines a bracket left open carries: up to where
    the brackets balance, by a count that ignores strings), if it parses."""
    def parses(text: str) -> bool:
        try:
            ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
        return True

    if parses(lines[i]):
        return lines[i]
    depth, end = 0, i
    for end in range(i, min(len(lines), i + most)):
        depth += sum(lines[end].count(c) for c in "([{") - sum(lines[end].count(c) for c in ")]}")
        if depth <= 0:
            break
    text = "\n".join(lines[i:end + 1])
    return text if end > i and parses(text) else None


def _opens_code(lines: list[str], i: int) -> bool:
    return bool(re.match(r"(?:def|class|async|try)\b|@", lines[i])) or _statement_at(lines, i) is not None


def _imports_above(lines: list[str], start: int) -> list[str]:
    found = []
    for i in range(start):
        if re.match(r"(?:from\s+\S+\s+import\s|import\s)", lines[i]):
            statement = _statement_at(lines, i)
            if statement is not None:
                found.append(statement)
    return found


def called_names(tests: Iterable[str]) -> list[str]:
    """Names called in test statements (`assert f(x) == 1` → `f`), builtins excluded, in order."""
    import builtins

    names: list[str] = []
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                if not hasattr(builtins, name) and name not in names:
                    names.append(name)
    return names
