"""Tasks with exact verifiers: the `Task` contract and the synthetic tasks that train and
evaluate the embedded tiny MDLM.

`TASKS` maps a task name to its class; `get_task(name, **kw)` builds one. This package generates
and verifies examples as text; it does not tokenize (see `depmask.models.tiny_mdlm.tokenizer`)
or decode. The real benchmarks read from local files (GSM8K, MATH-500, HumanEval, MBPP) live in
`depmask.tasks.benchmarks`, registered apart in `BENCHMARKS` (`get_benchmark(name, **kw)`), so
`TASKS` stays the synthetic tasks only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from depmask.tasks.addition import Addition
from depmask.tasks.base import (
    SPLITS,
    Example,
    SyntheticTask,
    Task,
    check_split,
    check_task_kwargs,
    split_of,
)
from depmask.tasks.benchmarks import BENCHMARKS, Benchmark, get_benchmark
from depmask.tasks.permutation import Permutation
from depmask.tasks.sort import Sort
from depmask.tasks.sudoku4 import Sudoku4
from depmask.tasks.text import EOS, MASK, PAD, SPECIAL_TOKENS, UNK, completion_tokens, pad_answer

TASKS: dict[str, type[SyntheticTask]] = {
    Sudoku4.name: Sudoku4,
    Permutation.name: Permutation,
    Sort.name: Sort,
    Addition.name: Addition,
}


def get_task(name: str, **kwargs: Any) -> SyntheticTask:
    """Build the task registered as `name` with keyword arguments `kwargs`."""
    if name not in TASKS:
        raise ValueError(f"unknown task `name` ({name!r}); known tasks: {', '.join(sorted(TASKS))}")
    check_task_kwargs(name, TASKS[name], kwargs)
    return TASKS[name](**kwargs)


def task_symbols(tasks: Iterable[Task | str] | None = None) -> set[str]:
    """The union of the symbols of `tasks` (task instances or registered names, built with their
    default arguments; default: every registered task): the words of the embedded model's
    tokenizer (`build_tokenizer(task_symbols(tasks))`)."""
    if tasks is not None and (isinstance(tasks, str) or not isinstance(tasks, Iterable)):
        raise TypeError(f"`tasks` ({tasks!r}) must be a list of task names or tasks, e.g. [{tasks!r}]")
    items = list(TASKS) if tasks is None else list(tasks)
    symbols: set[str] = set()
    for task in items:
        task = get_task(task) if isinstance(task, str) else task
        if not hasattr(task, "symbols"):
            raise ValueError(f"`tasks` item {task!r} is neither a task name nor has `symbols`")
        symbols.update(task.symbols)
    return symbols


__all__ = [
    "BENCHMARKS",
    "EOS",
    "MASK",
    "PAD",
    "SPECIAL_TOKENS",
    "SPLITS",
    "TASKS",
    "UNK",
    "Addition",
    "Benchmark",
    "Example",
    "Permutation",
    "Sort",
    "Sudoku4",
    "SyntheticTask",
    "Task",
    "check_split",
    "completion_tokens",
    "get_benchmark",
    "get_task",
    "pad_answer",
    "split_of",
    "task_symbols",
]
