"""The task contract: `Example`, the `Task` protocol, and `SyntheticTask`, a base for tasks
whose instances are generated from a seed and checked by an exact verifier.

A synthetic task splits its instance space into train and test *by construction*: the stable
hash (sha256) of an instance's canonical key decides its split, and `examples()` rejection-samples
instances of the requested split, so no test instance ever appears in training data. Examples are
drawn i.i.d. within a split (repeats are possible in small instance spaces; they are not removed).
This module does not tokenize, decode, or know any concrete task.
"""

from __future__ import annotations

import hashlib
import inspect
import numbers
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class Example:
    """One task instance.

    Attributes:
        id: stable string id, `task:split:seed:index`.
        task: the task's name.
        prompt: space-separated tokens, starting with the task's tag token (e.g. `<sudoku4>`).
        answer: one reference answer, exactly `answer_length` tokens (`[EOS]`-padded).
        meta: JSON-serialisable facts about the instance (its key, solution count, ...).
    """

    id: str
    task: str
    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """What every task offers: examples, valid answers, an exact verifier, a rendering."""

    name: str

    @property
    def answer_length(self) -> int:
        """Answer tokens (the generation canvas); answers are `[EOS]`-padded to this length."""
        ...

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every non-special token the task's prompts and answers use."""
        ...

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        """`n` examples of `split` ("train" or "test"), deterministic for (split, n, seed)."""
        ...

    def sample_answer(self, example: Example, rng: random.Random) -> str:
        """A uniformly random valid answer (padded to `answer_length`)."""
        ...

    def score(self, example: Example, completion: str) -> bool:
        """True iff `completion` (space-separated tokens, trailing `[EOS]`/`[PAD]` ignored)
        is a correct answer; anything malformed is False."""
        ...

    def show(self, example: Example, completion: str | None = None) -> str:
        """A readable multi-line rendering of the example (and of a completion, if given)."""
        ...


def check_split(split: str) -> str:
    """Return `split` if it is "train" or "test", else raise a ValueError naming it."""
    if split not in SPLITS:
        raise ValueError(f"`split` ({split!r}) must be one of {', '.join(SPLITS)}")
    return split


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """Return `value` if it is an integer (not a bool) in [lo, hi], else raise a ValueError naming
    the argument: sizes reach tasks from a config's `task_kwargs`, where `"3"`, `4.5` or `true`
    would otherwise fail deep in generation, after the model has loaded."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy's integers are integers
        raise ValueError(f"`{name}` ({value!r}) must be an integer, not {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        bound = f"lie in [{lo}, {hi}]" if hi is not None else f"be >= {lo}"
        raise ValueError(f"`{name}` ({value}) must {bound}")
    return int(value)


def check_optional_bool(name: str, value: Any) -> bool | None:
    """Return `value` if it is True, False or None, else raise a ValueError naming it (`"false"`
    from a config would otherwise count as true)."""
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"`{name}` ({value!r}) must be true, false or null, not {type(value).__name__}")
    return value


def check_task_kwargs(name: str, cls: type, kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments that `cls` (a task or benchmark class) does not take, naming them
    and the ones it does (they reach it from a config's `task_kwargs`, far from the class)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [k for k in params if k != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"task {name!r} takes no argument {', '.join(map(repr, unknown))} (from `task_kwargs`); "
                         f"its arguments: {', '.join(accepted) or 'none'}")


def task_arguments(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments a task (or benchmark) of class `cls` is built with from `kwargs`: its
    defaults, updated by `kwargs` (so an argument given at its default value reads the same)."""
    params = inspect.signature(cls.__init__).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    defaults = {k: p.default for k, p in params.items()
                if k != "self" and p.kind in named and p.default is not inspect.Parameter.empty}
    return {**defaults, **kwargs}


def split_of(task: str, key: str, test_fraction: float) -> str:
    """The split an instance belongs to: a stable hash of (task, key) against `test_fraction`."""
    digest = hashlib.sha256(f"{task}|{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < test_fraction else "train"


class SyntheticTask(ABC):
    """Base of the generated tasks: split by key hash, deterministic rejection sampling.

    A subclass sets `name`, implements `answer_length`, `symbols`, `_instance` (draw one
    instance), `sample_answer` and `score`; it may override `show`.
    """

    name: str = ""

    def __init__(self, test_fraction: float = 0.1) -> None:
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
            raise ValueError(f"`test_fraction` ({test_fraction!r}) must be a number in (0, 1)")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"`test_fraction` ({test_fraction}) must lie in (0, 1)")
        self.test_fraction = test_fraction

    @property
    @abstractmethod
    def answer_length(self) -> int: ...

    @property
    @abstractmethod
    def symbols(self) -> tuple[str, ...]: ...

    @abstractmethod
    def _instance(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        """Draw one instance: (canonical key, prompt, reference answer, meta)."""

    @abstractmethod
    def sample_answer(self, example: Example, rng: random.Random) -> str: ...

    @abstractmethod
    def score(self, example: Example, completion: str) -> bool: ...

    def split_of(self, key: str) -> str:
        """The split of the instance with canonical key `key`."""
        return split_of(self.name, key, self.test_fraction)

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        """`n` examples of `split`, deterministic for (split, n, seed); a shorter `n` gives a
        prefix of a longer one. Instances are drawn with replacement, so a small instance space
        repeats some (1000 permutation test items hold 983 distinct prompts, 1000 addition ones 732)."""
        check_split(split)
        n, seed = check_int("n", n, 0), check_int("seed", seed, -(2**63))  # 1.0 would seed other items than 1
        rng = random.Random(f"{self.name}:{split}:{seed}")
        out: list[Example] = []
        max_draws = 1000 * n + 10_000
        draws = 0
        while len(out) < n:
            if draws >= max_draws:
                raise ValueError(
                    f"task {self.name!r}: found only {len(out)} of `n` ({n}) {split} examples in "
                    f"{draws} draws: its arguments leave too few instances in this split (widen the task's "
                    f"size arguments; `test_fraction` is {self.test_fraction})"
                )
            draws += 1
            key, prompt, answer, meta = self._instance(rng)
            if self.split_of(key) != split:
                continue
            eid = f"{self.name}:{split}:{seed}:{len(out)}"
            out.append(Example(eid, self.name, prompt, answer, {"key": key, **meta}))
        return out

    def show(self, example: Example, completion: str | None = None) -> str:
        """Prompt, reference answer and, if given, the completion with its verdict."""
        lines = [f"[{example.id}]", f"  prompt:     {example.prompt}",
                 f"  answer:     {example.answer}"]
        if completion is not None:
            verdict = "correct" if self.score(example, completion) else "wrong"
            lines.append(f"  completion: {completion}  ({verdict})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
