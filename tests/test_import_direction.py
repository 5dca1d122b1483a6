"""DESIGN.md's import direction, read from the source: `eval`, `train`, `data_gen` -> `decoding`,
`predictor`, `tasks` -> `models`, and `decoding/` / `predictor/` free of Lightning, wandb and
`datasets`. Every import counts, a lazy one inside a function too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import depmask

ROOT = Path(depmask.__file__).parent
# a package may import its own level or a lower one; the top-level helper modules are level 0
LEVEL = {"paths": 0, "stable_hash": 0, "tensor_cache": 0, "revisions": 0, "models": 1, "decoding": 2, "predictor": 2, "tasks": 2,
         "data_gen": 3, "train": 3, "eval": 3, "commands": 4, "cli": 4}
TORCH_ONLY = ("decoding", "predictor")
HEAVY = ("lightning", "pytorch_lightning", "wandb", "datasets")


def _imports(path: Path, package: str = "depmask") -> list[tuple[int, str]]:
    """(line, module) of every import in `path` (of package `package`), wherever it sits:
    `from depmask import eval` as `depmask.eval`, relative imports resolved, and the modules
    named by a string to `import_module` / `__import__`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module))
            if module == "depmask" or (node.level and not node.module):  # the names may be subpackages
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and (
                    getattr(node.func, "id", None) in ("import_module", "__import__")
                    or getattr(node.func, "attr", None) == "import_module"):
            found.append((node.lineno, node.args[0].value))
    return found


def _package(path: Path) -> str | None:
    """The level key of a source file (None for the package's own `__init__`, the public API)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def test_every_package_has_a_level():
    packages = {_package(p) for p in ROOT.rglob("*.py")} - {None}
    assert packages <= set(LEVEL), f"new package(s) {packages - set(LEVEL)}: give them a level here"


def _violations(check) -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        package = _package(path)
        if package is None:
            continue
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        own = ".".join(parts[:-1])  # the package a relative import starts from (an __init__'s own)
        bad += [f"{path.relative_to(ROOT)}:{line} imports {module}" for line, module in _imports(path, own)
                if check(package, module)]
    return bad


def test_no_import_goes_up():
    def upward(package: str, module: str) -> bool:
        parts = module.split(".")
        if parts[0] != "depmask" or len(parts) < 2:
            return False
        return LEVEL.get(parts[1], 0) > LEVEL[package]

    assert _violations(upward) == []


@pytest.mark.parametrize("package", TORCH_ONLY)
def test_decoding_and_predictor_stay_light(package):
    assert _violations(lambda p, module: p == package and module.split(".")[0] in HEAVY) == []


def test_the_check_sees_every_form_of_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from depmask.eval.runner import x\n    import wandb\n"
                      "from depmask import train as t\nfrom ..eval import runner\nfrom . import y\n"
                      "import importlib\nimportlib.import_module('depmask.eval.plots')\n__import__('lightning')\n")
    found = _imports(source, "depmask.models")
    for expected in [(2, "depmask.eval.runner"), (3, "wandb"), (4, "depmask.train"), (5, "depmask.eval"),
                     (6, "depmask.models.y"), (8, "depmask.eval.plots"), (9, "lightning")]:
        assert expected in found, (expected, found)
