"""Verdicts of stored results rows against today's grader.

A results file keeps each item's completion and the verdict it was given (`correct`) when it was
decoded. Grading changes more often than decoding (answer extraction, the MATH comparison, the
code sandbox): a resumed or extended evaluation that kept old verdicts would score its old items
with the old grader and its new ones with the new, inside one run or across the runs of one table.
Each row records the grader that judged it (`TaskAdapter.grader`, a digest of the grading code);
`regrade` judges again, from the stored completion, every row of the current draw that another
grader judged (or that predates the record), and writes the new verdicts back.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from depmask.data_gen.shards import write_atomic
from depmask.eval.items import unique_items


def regrade(items_path: Path, rows: list[dict], examples, adapter) -> int:
    """Grade again, in place, the rows of `examples` (the first of each id, the one that counts)
    whose grader is not `adapter.grader`, and rewrite `items_path` with them; returns how many
    were graded again. Rows of other items are left as they are (they are graded when a draw
    holds them). Warns when a verdict changed."""
    grader = adapter.grader
    by_id = {ex.id: ex for ex in examples}
    stale = [r for r in unique_items(rows, set(by_id)) if r.get("grader") != grader]
    if not stale:
        return 0
    verdicts = adapter.grade([by_id[r["id"]] for r in stale], [r["completion"] for r in stale])
    changed = sum(bool(v) != bool(r["correct"]) for r, v in zip(stale, verdicts))
    for r, v in zip(stale, verdicts):
        r["correct"], r["grader"] = bool(v), grader
    rewrite_items(items_path, rows)
    if changed:
        warnings.warn(f"{items_path}: {changed} of {len(stale)} stored verdict(s) changed when graded again by "
                      f"today's grader of {adapter.name!r} (grading code changed since they were decoded)",
                      stacklevel=2)
    return len(stale)


def rewrite_items(path: Path, rows: list[dict]) -> None:
    """Write `rows` (as `read_items` returned them, in file order) back over their lines of `path`,
    atomically; lines that are not JSON rows stay where they are (`read_items` skips them)."""
    path = Path(path)
    *lines, tail = path.read_bytes().split(b"\n")  # as `read_items` reads: whole lines end with "\n"
    out, taken = [], iter(rows)
    for line in (line + b"\n" for line in lines):
        try:
            json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            out.append(line)
            continue
        row = next(taken, None)
        if row is None:
            raise RuntimeError(f"{path} holds more rows than were read: it changed while being graded")
        out.append((json.dumps(row) + "\n").encode())
    if next(taken, None) is not None:
        raise RuntimeError(f"{path} holds fewer rows than were read: it changed while being graded")
    write_atomic(path, b"".join(out) + tail)
