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
LEVEL = {"paths": 0, "stable_hash": 0, "tensor_cache": 0, "models": 1, "decoding": 2, "predictor": 2, "tasks": 2,
         "data_gen": 3, "train": 3, "eval": 3, "commands": 4, "cli": 4}
TORCH_ONLY = ("decoding", "predictor")
HEAVY = ("lightning", "pytorch_lightning", "wandb", "datasets")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `path`, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
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
        bad += [f"{path.relative_to(ROOT)}:{line} imports {module}" for line, module in _imports(path)
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


def test_the_check_sees_a_lazy_upward_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from depmask.eval.runner import x\n    import wandb\n")
    assert _imports(source) == [(2, "depmask.eval.runner"), (3, "wandb")]
