"""`permutation`: write any ordering of a given multiset of symbols.

Prompt: `<permutation>` then the n symbols in the order drawn (n + 1 tokens):
`<permutation> c a h a b e`. Answer: n symbols that form exactly the same multiset, e.g.
`a e b c h a`. Every such ordering is correct — the answer distribution is deliberately
multimodal; `sample_answer` is a uniformly random shuffle. The canonical key (the sorted
multiset) decides the split, so a test multiset never appears in training in any order.
It does not ask for a particular ordering.
"""

from __future__ import annotations

import math
import random
import string
from collections import Counter
from typing import Any

from depmask.tasks.base import Example, SyntheticTask, check_int
from depmask.tasks.text import completion_tokens


class Permutation(SyntheticTask):
    """Reorder n symbols drawn with repeats from the first `n_symbols` letters (a–h by default)."""

    name = "permutation"

    def __init__(self, n: int = 6, n_symbols: int = 8, test_fraction: float = 0.1) -> None:
        super().__init__(test_fraction=test_fraction)
        self.n = check_int("n", n, 1)
        self.n_symbols = check_int("n_symbols", n_symbols, 1, 26)

    @property
    def alphabet(self) -> tuple[str, ...]:
        return tuple(string.ascii_lowercase[: self.n_symbols])

    @property
    def answer_length(self) -> int:
        return self.n

    @property
    def symbols(self) -> tuple[str, ...]:
        return (f"<{self.name}>", *self.alphabet)

    def _instance(self, rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
        items = [rng.choice(self.alphabet) for _ in range(self.n)]
        multiset = sorted(items)
        counts = Counter(items)
        n_answers = math.factorial(self.n)
        for c in counts.values():
            n_answers //= math.factorial(c)
        meta = {"multiset": " ".join(multiset), "n_solutions": n_answers}
        return "".join(multiset), f"<{self.name}> " + " ".join(items), " ".join(multiset), meta

    def sample_answer(self, example: Example, rng: random.Random) -> str:
        items = example.meta["multiset"].split()
        rng.shuffle(items)
        return " ".join(items)

    def score(self, example: Example, completion: str) -> bool:
        tokens = completion_tokens(completion)
        return Counter(tokens) == Counter(example.meta["multiset"].split())
