"""`depmask tasks show`: print a few examples of a synthetic task with their reference answers.

It generates examples and renders them as text; it does not tokenize, decode or score a model.
"""

from __future__ import annotations

from depmask.tasks import BENCHMARKS, get_task


def tasks_show(name: str, n: int = 3, split: str = "test", seed: int = 0) -> None:
    """Print `n` examples of a task, each with its prompt and a reference answer.

    Args:
        name: registered task name, e.g. sudoku4, permutation, sort, addition.
        n: how many examples to print.
        split: "train" or "test".
        seed: the examples' seed (the same seed prints the same examples).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` ({n!r}) must be an int >= 1 (examples to print)")
    if name in BENCHMARKS:
        raise ValueError(f"`name` ({name!r}) is a text benchmark, not a synthetic task: its problems come from a "
                         "local data file (README, \"Real models and benchmarks\"); `tasks show` prints the "
                         "synthetic tasks")
    task = get_task(name)
    examples = task.examples(split, n, seed=seed)
    print(f"{task!r}: prompt <= {max(len(e.prompt.split()) for e in examples)} "
          f"tokens, answer {task.answer_length} tokens")
    for ex in examples:
        print()
        print(task.show(ex))
