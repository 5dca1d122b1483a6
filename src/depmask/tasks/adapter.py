"""One interface over the synthetic tasks and the real benchmarks, for the decode runner and the
harvest (which decodes the same prompts on the same canvas).

A synthetic task (`sudoku4`, ...) speaks space-separated tokens of the embedded tokenizer and has
a fixed answer length; a benchmark (`gsm8k`, ...) speaks text, has a prompt format and a
generation length, and grades in batches (code in a sandbox). `TaskAdapter` gives both the same
five operations: examples, prompt ids, completion text, grading, and the canvas lengths. It
does not decode.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import depmask.tasks as tasks_package
import depmask.tasks.benchmarks as benchmarks_package
from depmask.tasks import BENCHMARKS, TASKS, Example, get_benchmark, get_task
from depmask.tasks.base import task_arguments


@dataclass
class TaskAdapter:
    name: str
    task: Any
    synthetic: bool
    arguments: dict[str, Any] = field(default_factory=dict)  # what built `task` (defaults filled in)
    given: frozenset[str] = frozenset()  # the names of the arguments given (not defaulted)

    @classmethod
    def build(cls, name: str, **kwargs) -> TaskAdapter:
        if name in TASKS:
            default = task_arguments(TASKS[name], {}).get("test_fraction")
            if "test_fraction" in kwargs and kwargs["test_fraction"] != default:
                # the split is a hash of each instance against this fraction, and models (the
                # embedded one, `mdlm fit`) are trained on the default's train split: another
                # value would put their training instances into the test split
                raise ValueError(f"task {name!r}: `test_fraction` ({kwargs['test_fraction']!r}) in `task_kwargs` "
                                 f"would move instances between the splits; models are trained on the train "
                                 f"split of the default ({default}), so leave it unset")
            return cls(name, get_task(name, **kwargs), True, task_arguments(TASKS[name], kwargs), frozenset(kwargs))
        if name in BENCHMARKS:
            return cls(name, get_benchmark(name, **kwargs), False, task_arguments(BENCHMARKS[name], kwargs),
                       frozenset(kwargs))
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS) + sorted(BENCHMARKS)}")

    def check_gen_length(self, gen_length: int) -> None:
        """Refuse a `gen_length` shorter than a generated task's answer: every item would be graded
        wrong (the answer has exactly `answer_length` tokens)."""
        if self.synthetic and gen_length < self.task.answer_length:
            raise ValueError(f"task {self.name!r}: `gen_length` ({gen_length}) is shorter than its answer "
                             f"({self.task.answer_length} tokens), so no completion could be right; give at least "
                             f"{self.task.answer_length}, or leave it unset (the answer's length)")

    def check_length_arguments(self, gen_length: int | None, block_length: int | None) -> None:
        """Refuse a `gen_length` / `block_length` given for every task that differs from the one
        given in this task's own arguments (`task_kwargs`): the former wins, and the latter was
        dropped silently (and still recorded among the task's arguments)."""
        for name, value in (("gen_length", gen_length), ("block_length", block_length)):
            if value is not None and name in self.given and self.arguments[name] != value:
                raise ValueError(f"task {self.name!r}: `{name}` is {self.arguments[name]!r} in its `task_kwargs` but "
                                 f"{value!r} for every task (`{name}`), which would win silently; give it in one "
                                 "place")

    @property
    def gen_length(self) -> int:
        return self.task.answer_length if self.synthetic else self.task.gen_length

    @property
    def block_length(self) -> int:
        return self.gen_length if self.synthetic else self.task.block_length

    def examples(self, split: str, n: int | None, seed: int) -> list[Example]:
        if self.synthetic:
            if n is None:
                raise ValueError(f"task {self.name!r} is generated: give `n`, the number of items")
            return self.task.examples(split, n, seed=seed)
        return self.task.examples(split, n, seed=seed if seed else None)

    def prompt_ids(self, example: Example, tokenizer) -> list[int]:
        if self.synthetic:
            self._check_symbols(tokenizer)
            return tokenizer.convert_tokens_to_ids(example.prompt.split())
        return self.task.prompt_ids(example, tokenizer)

    def _check_symbols(self, tokenizer) -> None:
        if getattr(self, "_checked", None) is tokenizer:
            return
        check_symbols(self.name, self.task, tokenizer, self.arguments)
        self._checked = tokenizer

    def completion(self, ids: Sequence[int], tokenizer, eos_ids: Sequence[int] = ()) -> str:
        if self.synthetic:
            return " ".join(tokenizer.convert_ids_to_tokens(list(ids)))
        return self.task.completion_text(ids, tokenizer, eos_ids)

    @property
    def grader(self) -> str:
        """Which grader judges this task: a digest of the source of the package that holds the
        task's class (`tasks/` for the synthetic tasks, `tasks/benchmarks/` for the benchmarks:
        their answer extraction, comparison and sandbox). A results row records it with its
        verdict, so that a row graded by other code is graded again when read (`eval.regrade`).
        Hashed when this module is imported, close to when the grading code was (a change on disk
        during a long evaluation would otherwise stamp the old code's verdicts with the new code's
        digest)."""
        directory = Path(inspect.getfile(type(self.task))).parent
        return _GRADERS.get(directory) or _source_digest(directory)  # a task class from elsewhere: now

    def grade(self, examples: Sequence[Example], completions: Sequence[str]) -> list[bool]:
        if self.synthetic:
            return [bool(self.task.score(e, c)) for e, c in zip(examples, completions)]
        return [g.correct for g in self.task.grade(examples, completions)]


def check_symbols(name: str, task, tokenizer, arguments: dict | None = None) -> None:
    """Refuse a synthetic task whose symbols the tokenizer lacks (they would all become its unknown
    token, and the reference answer itself could not be written): `permutation` with `n_symbols: 12`
    on the embedded model, which knows 8 letters; `addition` on a model trained on `sort` alone."""
    vocab = tokenizer.get_vocab()
    missing = [s for s in task.symbols if s not in vocab]
    if missing:
        shown = f" ({arguments})" if arguments else ""
        raise ValueError(f"task {name!r}{shown} uses {len(missing)} symbol(s) the model's tokenizer does not have: "
                         f"{' '.join(missing[:12])}; the model was not trained on this task (or its arguments)")


@functools.cache
def _source_digest(directory: Path) -> str:
    """sha256 (16 hex digits) over the names and bytes of the `.py` files directly in `directory`
    (regular files, not hidden: an editor's `.#x.py` lock link or a copied `._x.py` is no code)."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("[!.]*.py")):
        if path.is_file():
            digest.update(f"{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


_GRADERS = {directory: _source_digest(directory)  # tasks/ and tasks/benchmarks/
            for directory in (Path(tasks_package.__file__).parent, Path(benchmarks_package.__file__).parent)}
