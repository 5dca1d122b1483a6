"""An evaluation's draws of items: which items a (task, split, n, seed) draw holds, the held-out
draw without the evaluation's prompts, and digests that tell draws and items apart (what was
decoded is what is scored now)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from depmask.tasks.adapter import TaskAdapter


def task_prompts(tasks: list[str], split: str, n: int | None, seed: int,
                 task_kwargs: dict[str, dict] | None = None) -> dict[str, set[str]]:
    """Per task, the prompts of the draw `run_decode_eval` makes with these arguments."""
    prompts = {}
    for task_name in tasks:
        adapter = TaskAdapter.build(task_name, **(task_kwargs or {}).get(task_name, {}))
        prompts[task_name] = {ex.prompt for ex in adapter.examples(split, n, seed)}
    return prompts


def draw_items(adapter: TaskAdapter, split: str, n: int | None, seed: int,
               exclude: dict[str, set[str]] | None) -> list:
    """A task's items for one draw, less the `exclude`d prompts (there must be some left)."""
    examples = adapter.examples(split, n, seed)
    if exclude:
        examples = [ex for ex in examples if ex.prompt not in exclude.get(adapter.name, ())]
        if not examples:
            raise ValueError(f"task {adapter.name!r}: every item of the draw (split {split!r}, seed {seed}) "
                             "is an excluded (evaluation) item")
    return examples


def check_heldout(tasks: list[str], split: str, n: int | None, seed: int, select_n: int, select_seed: int,
                  task_kwargs: dict[str, dict] | None = None) -> None:
    """Each task's held-out draw (`select_n` items, `select_seed`) keeps items once the evaluation
    draw's are left out: checked before a model loads, not after the evaluation has decoded."""
    if n is None:
        raise ValueError(f"`select_n` ({select_n}) needs `n`: with `n` None the evaluation takes every item of "
                         "a benchmark's split, and no held-out item is left to choose knobs on")
    exclude = task_prompts(tasks, split, n, seed, task_kwargs)
    for task_name in tasks:
        adapter = TaskAdapter.build(task_name, **(task_kwargs or {}).get(task_name, {}))
        draw_items(adapter, split, select_n, select_seed, exclude)


def item_digest(ex) -> str:
    """A short digest of what an item asks and expects (prompt, answer), kept with its result."""
    return hashlib.sha256(json.dumps([ex.prompt, ex.answer]).encode()).hexdigest()[:16]


def check_items(items_path: Path, rows: list[dict], examples) -> None:
    """Refuse a results file whose rows were decoded from other prompts or answers than the items
    of the same id now (a benchmark's data file changed at the same path: its ids are record
    indices, and the old completions were reused, graded against the old answers). Rows written
    before the digest was kept are not checked."""
    now = {ex.id: item_digest(ex) for ex in examples}
    stale = [r["id"] for r in rows if "item" in r and r["id"] in now and r["item"] != now[r["id"]]]
    if stale:
        raise ValueError(f"{items_path} holds results for {len(stale)} item(s) (e.g. {stale[0]!r}) whose prompt or "
                         "answer is not what it is now (the task's data changed at the same path?); decode into "
                         "another `output`, or delete that file to decode them again")


def draw_digest(examples) -> str:
    """sha256 of a draw's items — each one's id, prompt and answer, sorted by id: two runs with the
    same digest were scored on the same items (ids alone are `task:split:seed:index`, the same for
    a draw under other task arguments)."""
    rows = sorted(json.dumps([ex.id, ex.prompt, ex.answer]) for ex in examples)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()
