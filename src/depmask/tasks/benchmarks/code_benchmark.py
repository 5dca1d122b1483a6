"""`CodeBenchmark`: a benchmark whose verdicts come from running the program built from a
completion (HumanEval, MBPP) in the sandbox.

A subclass implements `program(example, completion) -> str` (completion post-processed to the
function, followed by the tests) and `entry_points(example)`. `grade` builds every program and runs
them through an executor, by default `depmask.tasks.benchmarks.sandbox.run_programs` with this
benchmark's limits and a pool of `max_workers` processes. That default is imported when first
needed (to check the limits when no executor is given); pass `executor=` to substitute another
(e.g. a remote or containerised runner). Status `passed` is
correct; `failed` (an assertion), `timeout`, `memory` and `error` are not.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from depmask.tasks.base import Example, check_int
from depmask.tasks.benchmarks.base import Benchmark, Grade
from depmask.tasks.benchmarks.code import extract_code
from depmask.tasks.benchmarks.future_imports import hoist_future_imports

# programs -> results with `.passed`, `.status`, `.stderr_tail` (like `sandbox.ExecResult`)
Executor = Callable[[Sequence[str]], Sequence[Any]]


class CodeBenchmark(Benchmark):
    """Base of the benchmarks scored by executing code."""

    def __init__(
        self,
        path: str | Path | None = None,
        shots: int | None = None,
        chat: bool | None = None,
        system_prompt: str | None = None,
        allow_download: bool | None = None,
        gen_length: int = 256,
        block_length: int = 32,
        timeout_s: float = 10.0,
        memory_mb: int = 2048,
        max_workers: int | None = None,
        executor: Executor | None = None,
    ) -> None:
        """Arguments as `Benchmark`, plus the sandbox's `timeout_s` and `memory_mb` per program,
        `max_workers` programs at once (default min(4, CPUs)) and an optional `executor`."""
        super().__init__(path=path, shots=shots, chat=chat, system_prompt=system_prompt,
                         allow_download=allow_download, gen_length=gen_length, block_length=block_length)
        if max_workers is not None:
            max_workers = check_int("max_workers", max_workers, 1)
        if executor is None:  # check the limits now, not at the first grade after a batch decoded
            from depmask.tasks.benchmarks.sandbox import SandboxLimits

            limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
            timeout_s, memory_mb = limits.timeout_s, limits.memory_mb  # `4e3` from YAML -> 4000
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_workers = max_workers
        self._executor = executor

    @abstractmethod
    def entry_points(self, example: Example) -> list[str]:
        """The names the tests call (what the completion must define)."""

    @abstractmethod
    def _prefix(self, example: Example) -> str:
        """Code the completion continues (HumanEval's signature + docstring), else ''."""

    @abstractmethod
    def _tests(self, example: Example) -> str:
        """The test code appended after the solution."""

    def solution(self, example: Example, completion: str) -> str:
        """The completion post-processed to the function(s) it should define, with imports."""
        return extract_code(self.clean(completion), self.entry_points(example), self._prefix(example))

    def program(self, example: Example, completion: str) -> str:
        """The whole program the sandbox runs: solution, then the tests."""
        return self._program(example, self.solution(example, completion))

    def _program(self, example: Example, solution: str) -> str:
        return hoist_future_imports(f"{solution}\n\n{self._tests(example)}\n")

    def run(self, programs: Sequence[str]) -> Sequence[Any]:
        """Execute `programs` with the executor (default: the sandbox pool)."""
        if self._executor is not None:
            return self._executor(programs)
        from depmask.tasks.benchmarks.sandbox import SandboxLimits, run_programs

        limits = SandboxLimits(timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        return run_programs(programs, limits, max_workers=self.max_workers)

    def grade(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        if len(examples) != len(completions):
            raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
        solutions = [self.solution(e, c) for e, c in zip(examples, completions)]
        programs = [self._program(e, s) for s, e in zip(solutions, examples)]
        results = list(self.run(programs))
        if len(results) != len(programs):  # zip would drop the items past the shorter one
            raise ValueError(f"the executor returned {len(results)} results for {len(programs)} programs; "
                             "it must return one per program, in order")
        return [Grade(bool(r.passed), s, ", ".join(self.entry_points(e)), r.status, r.stderr_tail[-1000:])
                for s, e, r in zip(solutions, examples, results)]

    def grade_one(self, example: Example, completion: str) -> Grade:
        return self.grade([example], [completion])[0]
