"""Open a harvest for reading: verified first, then memory-mapped (never loaded whole).

`load_harvest(dir)` returns one `datasets.Dataset` over every shard; the Arrow files stay on disk
and pages come in as rows are read, so a harvest larger than RAM trains fine. It refuses a
directory that `verify_harvest` finds a problem in, with the report as the message.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from depmask.data_gen.shards import HARVEST_JSON, shard_paths
from depmask.data_gen.verify import verify_harvest


class HarvestError(ValueError):
    """A harvest directory that cannot be used (the message lists every problem)."""


def load_harvest(directory: str | Path, verify: bool = True) -> Dataset:
    """All states of a harvest as one memory-mapped `Dataset` (numpy format)."""
    directory = Path(directory).expanduser()
    if verify:
        report = verify_harvest(directory)
        if not report.ok:
            raise HarvestError(f"harvest at {directory} failed verification:\n{report.text()}")
    parts = [Dataset.from_file(str(p), in_memory=False) for p in shard_paths(directory)]
    if not parts:
        raise HarvestError(f"harvest at {directory} has no shards")
    return concatenate_datasets(parts).with_format("numpy")


def harvest_digest(info: dict) -> str | None:
    """A harvest's identity from its `harvest_info`: the digest of its examples' prompts
    (`items_sha256`), or of their ids alone in a harvest too old to record the prompts."""
    return info.get("items_sha256") or info.get("examples_sha256")


REQUIRED_INFO = ("fingerprint", "hidden_size")  # what every reader of a harvest takes from its harvest.json


def harvest_info(directory: str | Path) -> dict:
    """The harvest's `harvest.json` (model fingerprint, hidden size, config); a file that does not
    parse, is not an object or lacks a field every reader needs is a HarvestError naming it (its
    readers took `hidden_size` from it before the shards were verified: a bare JSON error)."""
    path = Path(directory).expanduser() / HARVEST_JSON
    if not path.is_file():
        raise HarvestError(f"{path} is missing: {directory} is not a harvest directory")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HarvestError(f"{path} is unreadable ({type(err).__name__}: {err}); `depmask harvest verify "
                           f"{directory}` reports the whole directory") from None
    missing = [k for k in REQUIRED_INFO if not isinstance(info, dict) or k not in info]
    if missing:
        raise HarvestError(f"{path} lacks {', '.join(missing)}: not a complete harvest record; `depmask harvest "
                           f"verify {directory}` reports the whole directory")
    return info


def column_values(data: Dataset, name: str) -> list:
    """Every value of one column of `data`, as a Python list, in one read. (Indexing the lazy
    column that `data[name]` returns row by row re-reads the table each time: over a full harvest's
    27k rows that took two minutes.)"""
    values = data[name][:]
    return values.tolist() if hasattr(values, "tolist") else list(values)
