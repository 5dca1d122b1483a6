"""`addition`: add two numbers of up to `digits` digits each.

Fixed-width, column-aligned digits (the usual format for small transformers: digit i of the sum
sits at the same offset as digit i of each operand, so the model learns columns and carries, not
where a number of unknown length starts). Prompt: `<addition>`, the first number zero-padded to
`digits`, `+`, the second likewise, `=` (2·digits + 3 tokens): `<addition> 4 5 7 + 0 8 9 =`.
Answer: the sum zero-padded to `digits + 1` digits, most significant first: `0 5 4 6`. Exactly one
answer is right.
Each number's length is uniform in [1, digits] and its digits uniform (leading digit non-zero),
so carries are common (with 3 digits the units column carries about half the time, higher
columns less: 27 % of columns overall). The key is the unordered pair, so
`a + b` and `b + a` share a split. It does not do subtraction or other bases.
"""

from __future__ import annotations

import random
from typing import Any

from depmask.tasks.base import Example, SyntheticTask, check_int
from depmask.tasks.text import completion_tokens

_DIGITS = tuple("0123456789")


def _carries(a: int, b: int) -> int:
    """How many columns of a + b produce a carry."""
    carry, count = 0, 0
    while a or b:
        carry = int(a % 10 + b % 10 + carry >= 10)
        count += carry
        a, b = a // 10, b // 10
    return count


class Addition(SyntheticTask):
    """Sum of two non-negative integers below 10**digits."""

    name = "addition"

    def __init__(self, digits: int = 3, test_fraction: float = 0.1) -> None:
        super().__init__(test_fraction=test_fraction)
        self.digits = check_int("digits", digits, 1)

    @property
    def answer_length(self) -> int:
        return self.digits + 1

    @property
    def symbols(self) -> tuple[str, ...]:
        return (f"<{self.name}>", *_DIGITS, "+", "=")

    def _number(self, rng: random.Random) -> int:
        length = rng.randint(1, self.digits)
        if length == 1:
            return rng.randint(0, 9)
        return rng.randint(10 ** (length - 1), 10**length - 1)

    def _instance(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        a, b = self._number(rng), self._number(rng)
        key = f"{min(a, b)}+{max(a, b)}"
        w = self.digits
        prompt = f"<{self.name}> {' '.join(str(a).zfill(w))} + {' '.join(str(b).zfill(w))} ="
        answer = " ".join(str(a + b).zfill(w + 1))
        return key, prompt, answer, {"a": a, "b": b, "sum": a + b, "carries": _carries(a, b)}

    def sample_answer(self, example: Example, rng: random.Random) -> str:
        return example.answer

    def score(self, example: Example, completion: str) -> bool:
        return completion_tokens(completion) == example.answer.split()
