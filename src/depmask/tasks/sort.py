"""`sort`: write n digits in ascending order.

Prompt: `<sort>` then n digits (n + 1 tokens): `<sort> 3 1 4 1 5 9 2 6`. Answer: the same digits
ascending (n tokens): `1 1 2 3 4 5 6 9`. Exactly one answer is right. The canonical key (the
sorted digits) decides the split. It does not sort anything but single digits.
"""

from __future__ import annotations

import random
from typing import Any

from depmask.tasks.base import Example, SyntheticTask, check_int
from depmask.tasks.text import completion_tokens

_DIGITS = tuple("0123456789")


class Sort(SyntheticTask):
    """Sort `n` uniformly drawn digits (repeats allowed)."""

    name = "sort"

    def __init__(self, n: int = 8, test_fraction: float = 0.1) -> None:
        super().__init__(test_fraction=test_fraction)
        self.n = check_int("n", n, 1)

    @property
    def answer_length(self) -> int:
        return self.n

    @property
    def symbols(self) -> tuple[str, ...]:
        return (f"<{self.name}>", *_DIGITS)

    def _instance(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        items = [rng.choice(_DIGITS) for _ in range(self.n)]
        answer = sorted(items)
        return "".join(answer), f"<{self.name}> " + " ".join(items), " ".join(answer), {}

    def sample_answer(self, example: Example, rng: random.Random) -> str:
        return example.answer

    def score(self, example: Example, completion: str) -> bool:
        return completion_tokens(completion) == example.answer.split()
