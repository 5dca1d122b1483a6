"""`sudoku4`: complete a 4×4 Sudoku (2×2 boxes) from a few givens.

Prompt: `<sudoku4>` then the 16 cells row-major, `.` for a blank, `|` between rows (20 tokens):
`<sudoku4> 1 . . 4 | . . . . | . 1 . . | . . . 2`. Answer: the 16 digits row-major (16 tokens).
With few givens many grids complete the puzzle; ANY completion that keeps the givens and
satisfies every row, column and box is correct, and `sample_answer` is uniform over all of them
(the 288 valid 4×4 grids are enumerated once and filtered by the givens). It does not grade
partial credit or generate puzzles with a unique solution on purpose.
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache
from typing import Any

from depmask.tasks.base import Example, SyntheticTask, check_int
from depmask.tasks.text import completion_tokens

_DIGITS = ("1", "2", "3", "4")
_BLANK = "."
_ROW_SEP = "|"
_UNITS: tuple[tuple[int, ...], ...] = (
    *(tuple(4 * r + c for c in range(4)) for r in range(4)),  # rows
    *(tuple(4 * r + c for r in range(4)) for c in range(4)),  # columns
    *(tuple(4 * (br + r) + bc + c for r in range(2) for c in range(2))
      for br in (0, 2) for bc in (0, 2)),  # boxes
)


@lru_cache(maxsize=1)
def valid_grids() -> tuple[str, ...]:
    """All 288 valid 4×4 Sudoku grids, as 16-character strings of `1`-`4`, sorted."""
    rows = ["".join(p) for p in itertools.permutations("1234")]
    grids: list[str] = []

    def extend(prefix: str) -> None:  # add rows one at a time, keeping columns and boxes legal
        if len(prefix) == 16:
            grids.append(prefix)
            return
        for row in rows:
            s = prefix + row
            if all(len({s[i] for i in u if i < len(s)}) == sum(i < len(s) for i in u)
                   for u in _UNITS):
                extend(s)

    extend("")
    grids.sort()
    return tuple(grids)


@lru_cache(maxsize=1)
def _valid_set() -> frozenset[str]:
    return frozenset(valid_grids())


def solutions(givens: str) -> list[str]:
    """Every valid grid that agrees with `givens` (16 characters, `.` for a blank)."""
    if len(givens) != 16:
        raise ValueError(f"`givens` ({givens!r}) must have 16 characters")
    fixed = [(i, ch) for i, ch in enumerate(givens) if ch != _BLANK]
    return [g for g in valid_grids() if all(g[i] == ch for i, ch in fixed)]


def _grid_lines(cells: str) -> list[str]:
    """Render 16 cells as a 4×4 board with box separators."""
    lines = []
    for r in range(4):
        row = cells[4 * r: 4 * r + 4]
        lines.append(f"{row[0]} {row[1]} | {row[2]} {row[3]}")
        if r == 1:
            lines.append("----+----")
    return lines


class Sudoku4(SyntheticTask):
    """4×4 Sudoku with a number of givens drawn uniformly from [min_givens, max_givens]."""

    name = "sudoku4"

    def __init__(self, min_givens: int = 4, max_givens: int = 10, test_fraction: float = 0.1) -> None:
        super().__init__(test_fraction=test_fraction)
        min_givens, max_givens = check_int("min_givens", min_givens, 0, 16), check_int("max_givens", max_givens, 0, 16)
        if not 0 <= min_givens <= max_givens <= 16:
            raise ValueError(
                f"`min_givens` ({min_givens}) and `max_givens` ({max_givens}) must satisfy "
                "0 <= min_givens <= max_givens <= 16"
            )
        self.min_givens = min_givens
        self.max_givens = max_givens

    @property
    def answer_length(self) -> int:
        return 16

    @property
    def symbols(self) -> tuple[str, ...]:
        return (f"<{self.name}>", *_DIGITS, _BLANK, _ROW_SEP)

    def _instance(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        grid = rng.choice(valid_grids())
        k = rng.randint(self.min_givens, self.max_givens)
        shown = set(rng.sample(range(16), k))
        givens = "".join(grid[i] if i in shown else _BLANK for i in range(16))
        rows = [" ".join(givens[4 * r: 4 * r + 4]) for r in range(4)]
        prompt = f"<{self.name}> " + f" {_ROW_SEP} ".join(rows)
        meta = {"givens": givens, "n_givens": k, "n_solutions": len(solutions(givens))}
        return givens, prompt, " ".join(grid), meta

    def sample_answer(self, example: Example, rng: random.Random) -> str:
        return " ".join(rng.choice(solutions(example.meta["givens"])))

    def score(self, example: Example, completion: str) -> bool:
        tokens = completion_tokens(completion)
        if len(tokens) != 16 or any(t not in _DIGITS for t in tokens):
            return False
        grid = "".join(tokens)
        givens = example.meta["givens"]
        if any(ch != _BLANK and grid[i] != ch for i, ch in enumerate(givens)):
            return False
        return grid in _valid_set()

    def show(self, example: Example, completion: str | None = None) -> str:
        givens = example.meta["givens"]
        left = _grid_lines(givens)
        right = _grid_lines(example.answer.replace(" ", ""))
        meta = example.meta
        head = f"[{example.id}]  givens: {meta['n_givens']}, solutions: {meta['n_solutions']}"
        titles = ["puzzle", "answer"]
        cols = [left, right]
        if completion is not None:
            tokens = completion_tokens(completion)
            cells = "".join(t if len(t) == 1 else "?" for t in tokens[:16]).ljust(16, "?")
            verdict = "correct" if self.score(example, completion) else "wrong"
            titles.append(f"completion ({verdict})")
            cols.append(_grid_lines(cells))
        lines = [head, f"prompt: {example.prompt}", "    ".join(t.ljust(9) for t in titles).rstrip()]
        lines += ["    ".join(parts).rstrip() for parts in zip(*cols)]
        return "\n".join(lines)
