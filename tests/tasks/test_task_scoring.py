"""Instance metadata of the synthetic tasks against independent computations."""

import itertools
import math

from depmask.tasks.addition import Addition, _carries
from depmask.tasks.permutation import Permutation


def test_permutation_counts_its_distinct_orderings():
    """`meta["n_solutions"]` is the number of distinct orderings of the multiset, n! / Π c!: counted
    here by listing them (a plain n! would overcount every multiset with a repeat)."""
    task = Permutation(n=5, n_symbols=3)  # 5 draws of 3 letters: repeats in every instance
    for ex in task.examples("train", 30, seed=1):
        items = ex.meta["multiset"].split()
        assert ex.meta["n_solutions"] == len(set(itertools.permutations(items)))
    assert any(ex.meta["n_solutions"] < math.factorial(5) for ex in task.examples("train", 30, seed=1))


def _columns_that_carry(a: int, b: int) -> int:
    """Columns i whose sum carries: a and b below 10^(i+1) add up to 10^(i+1) or more."""
    width = len(str(max(a, b)))
    return sum((a % 10 ** (i + 1)) + (b % 10 ** (i + 1)) >= 10 ** (i + 1) for i in range(width))


def test_addition_counts_a_column_summing_to_exactly_ten_as_a_carry():
    """`meta["carries"]` counts the columns that produce a carry, a column sum of exactly 10
    included (5 + 5 carries: 10 = 0 carry 1); checked against a formula per column on generated
    items and by hand on 45 + 55 (5+5 = 10, 4+5+1 = 10: two carries)."""
    task = Addition(digits=3)
    items = task.examples("train", 200, seed=0) + task.examples("test", 50, seed=0)
    for ex in items:
        assert ex.meta["carries"] == _columns_that_carry(ex.meta["a"], ex.meta["b"]), ex.meta
    assert any(_columns_that_carry(ex.meta["a"], ex.meta["b"]) for ex in items)
    assert (_carries(45, 55), _carries(5, 5), _carries(999, 1), _carries(4, 5)) == (2, 1, 3, 0)


def test_addition_single_digit_operands_include_zero():
    """A number's length is uniform in [1, digits] and its digits uniform: a one-digit operand is
    any of 0–9 (0 + 7 is an instance), so with `digits` 1 both operands take all ten values."""
    task = Addition(digits=1)
    items = task.examples("train", 300, seed=0) + task.examples("test", 100, seed=0)
    assert {ex.meta["a"] for ex in items} | {ex.meta["b"] for ex in items} == set(range(10))
