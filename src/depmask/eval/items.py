"""Per-item results as append-only JSONL, one file per (task, policy, knobs) run: the resume log.

Each decoded batch appends its rows and fsyncs, so an interrupted evaluation loses at most the
batch in flight; a torn last line (the process died mid-write) is dropped when the file is read
again. `done_ids` tells the runner what to skip. This module stores and reads; it does not decode.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path


def run_slug(policy: str, knobs: dict) -> str:
    """A file-name-safe, stable name for a (policy, knobs) run."""
    digest = hashlib.sha1(json.dumps(knobs, sort_keys=True, default=str).encode()).hexdigest()[:8]
    short = "_".join(f"{k}={v}" for k, v in sorted(knobs.items()) if isinstance(v, (int, float)))
    slug = re.sub(r"[^A-Za-z0-9_.=-]", "-", f"{policy}_{short}" if short else policy)
    return f"{slug}_{digest}"


def read_items(path: Path) -> list[dict]:
    """Rows of a results file; a torn final line is dropped (and cut from the file)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, good_bytes = [], 0
    with open(path, "rb") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
                good_bytes += len(line)
            except json.JSONDecodeError:
                break
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return rows


def append_items(path: Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def done_ids(rows: list[dict]) -> set[str]:
    return {r["id"] for r in rows}
