"""Harvest directory layout: atomic shards, their sidecars, the manifest, and memory-mapped loading.

    <out>/harvest.json             what was asked (config, model fingerprint, hidden size, schema)
    <out>/shards/<name>.arrow      one Arrow stream file per written batch of examples
    <out>/shards/<name>.json       its sidecar: rows, example ids, states per example, sha256
    <out>/manifest.json            the consolidated index, written when a harvest completes

A shard is written to a temporary file, fsynced and renamed; its sidecar is written the same way
*after* it. A shard is complete iff its sidecar exists, so a process killed at any moment leaves
at worst a temporary file or a shard without a sidecar, which `clean_incomplete` removes (a
temporary file of `<out>`'s own JSON / YAML: `clean_stale_temporaries`, at the end); the
examples of completed shards are skipped when the same command runs again. Shard names derive
from their example ids, so every rank of a distributed harvest writes its own files without
coordination. This module does not compute anything about states (`harvest` does).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

SHARDS = "shards"
HARVEST_JSON = "harvest.json"
MANIFEST_JSON = "manifest.json"
TMP_PREFIX = ".tmp-"
OWN_FILES = (HARVEST_JSON, "harvest.yaml", MANIFEST_JSON)  # written by `write_atomic` in the top folder


@dataclass
class ShardInfo:
    name: str  # file name of the .arrow shard
    rows: int
    example_ids: list[str]
    states: dict[str, int]  # example id → states written
    sha256: str
    bytes: int
    fingerprint: str
    harvest: str | None = None  # `harvest_id` of the harvest that wrote it (None: written before 2026-11-30)


_ID_KEYS = ("schema_version", "fingerprint", "hidden_size", "config", "examples_sha256", "items_sha256",
            "precision", "state_choice")


def harvest_id(spec: dict) -> str:
    """A digest of what a harvest's data depends on (`harvest.json`'s model, settings and examples),
    which each shard's sidecar records: a shard of another harvest of the same examples has the same
    name, and was taken as done."""
    return hashlib.sha256(json.dumps({k: spec.get(k) for k in _ID_KEYS}, sort_keys=True).encode()).hexdigest()[:16]


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never half."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def shard_name(example_ids: Iterable[str]) -> str:
    digest = hashlib.sha1("\n".join(sorted(example_ids)).encode()).hexdigest()[:16]
    return f"shard-{digest}.arrow"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(out: Path, table: pa.Table, example_ids: list[str], fingerprint: str,
                harvest: str | None = None) -> ShardInfo:
    """Write one shard (Arrow stream, the format `datasets` memory-maps) and then its sidecar.

    `example_ids` lists every example the shard covers, including ones that produced no state;
    `harvest` the writing harvest's `harvest_id` (a shard's name comes from its example ids alone,
    so another harvest of the same examples names its shards alike).
    """
    states: dict[str, int] = dict.fromkeys(example_ids, 0)
    for eid in table.column("example_id").to_pylist():
        if eid not in states:  # checked before anything is written
            raise ValueError(f"write_shard: the table has a state of example {eid!r}, which is not in "
                             f"`example_ids` ({len(example_ids)} ids); a shard lists every example it holds")
        states[eid] += 1
    directory = Path(out) / SHARDS
    directory.mkdir(parents=True, exist_ok=True)
    name = shard_name(example_ids)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    write_atomic(directory / name, data)
    info = ShardInfo(name=name, rows=table.num_rows, example_ids=list(example_ids), states=states,
                     sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), fingerprint=fingerprint,
                     harvest=harvest)
    write_json_atomic(directory / sidecar_name(name), vars(info))
    return info


def sidecar_name(shard: str) -> str:
    return shard[: -len(".arrow")] + ".json"


def read_sidecar(path: Path) -> ShardInfo:
    """Parse a sidecar; raises ValueError naming the file when it is not one."""
    try:
        info = ShardInfo(**json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{Path(path).name}: not a shard sidecar ({e})") from None
    kinds = {"name": str, "rows": int, "example_ids": list, "states": dict, "sha256": str, "bytes": int,
             "fingerprint": str}
    wrong = [f"{k} is {type(getattr(info, k)).__name__}" for k, kind in kinds.items()
             if not isinstance(getattr(info, k), kind) or isinstance(getattr(info, k), bool)]
    if info.harvest is not None and not isinstance(info.harvest, str):
        wrong.append(f"harvest is {type(info.harvest).__name__}")
    if wrong or not all(isinstance(e, str) for e in info.example_ids):
        raise ValueError(f"{Path(path).name}: not a shard sidecar ({', '.join(wrong) or 'example_ids are not all text'})")
    return info


def completed_shards(out: Path) -> list[ShardInfo]:
    """Sidecars of every complete shard (sorted by name)."""
    directory = Path(out) / SHARDS
    if not directory.is_dir():
        return []
    infos = []
    for p in sorted(directory.glob("shard-*.json")):
        info = read_sidecar(p)
        if (directory / info.name).is_file():
            infos.append(info)
    return infos


def done_examples(out: Path) -> set[str]:
    """Ids of the examples in complete, intact shards: a shard whose size is not its sidecar's is
    not done (`clean_incomplete` removes it), so every rank of a multi-process harvest reads the
    same answer whether it reads before or after rank 0's cleaning (under torchrun / SLURM the
    ranks start together, and the barrier between the two has no process group yet)."""
    directory = Path(out) / SHARDS
    if not directory.is_dir():
        return set()
    done: set[str] = set()
    for side in sorted(directory.glob("shard-*.json")):
        try:
            info = read_sidecar(side)
            intact = (directory / info.name).stat().st_size == info.bytes
        except OSError:  # removed meanwhile by the cleaning; an unreadable sidecar raises, as
            continue  # `completed_shards` does, before any work rather than at the manifest
        if intact:
            done.update(info.example_ids)
    return done


def foreign_shards(out: Path, harvest: str) -> list[str]:
    """Shards whose sidecar names another harvest than `harvest` (one copied in from a harvest of
    the same examples under other settings: same name, other data); sidecars without the record
    (older harvests) are not judged."""
    directory = Path(out) / SHARDS
    found = []
    for side in sorted(directory.glob("shard-*.json")) if directory.is_dir() else []:
        try:
            info = read_sidecar(side)
        except ValueError:
            continue  # named by `verify` and by `completed_shards`
        except OSError:  # removed meanwhile by rank 0's cleaning (ranks start together: see `done_examples`)
            continue
        if info.harvest is not None and info.harvest != harvest:
            found.append(info.name)
    return found


def clean_incomplete(out: Path) -> list[str]:
    """Remove temporary files, shards without a sidecar, and shards whose size is not the one
    their sidecar records (truncated or overwritten since), with that sidecar, so a resume
    harvests their examples again; returns the removed names. (A full content check is `depmask
    harvest verify`'s: it reads every byte.)"""
    directory = Path(out) / SHARDS
    if not directory.is_dir():
        return []
    removed = []
    for p in sorted(directory.iterdir()):
        # (`datasets`' cache files of a map over the loaded shards are the user's: `cache-*.arrow`)
        orphan = p.suffix == ".arrow" and p.name.startswith("shard-") and not (directory / sidecar_name(p.name)).exists()
        if p.name.startswith(TMP_PREFIX) or orphan:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    for side in sorted(directory.glob("shard-*.json")):
        try:
            info = read_sidecar(side)
        except ValueError:
            continue  # not ours to judge: `verify` names it
        shard = directory / info.name
        if shard.is_file() and shard.stat().st_size != info.bytes:
            shard.unlink()
            side.unlink()
            removed += [info.name, side.name]
    return removed


def clean_stale_temporaries(out: Path) -> list[str]:
    """Remove temporary files of interrupted writes of `out`'s own files (`harvest.json`,
    `harvest.yaml`, `manifest.json`) whose writing process is gone; returns their names. Called by
    rank 0 once the harvest is done (every rank wrote those files before its forwards), and a live
    writer's file (its pid still running here) is kept."""
    removed = []
    for p in own_temporaries(out):
        if not _running(int(p.name.rsplit(".", 1)[-1])):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def own_temporaries(out: Path) -> list[Path]:
    """The temporary files `write_atomic` leaves in `out` for its own files (`.tmp-harvest.json.<pid>`
    and the like); any other file there is the user's."""
    pattern = re.compile(rf"{re.escape(TMP_PREFIX)}(?:{'|'.join(map(re.escape, OWN_FILES))})\.\d+")
    return [p for p in sorted(Path(out).glob(f"{TMP_PREFIX}*")) if pattern.fullmatch(p.name) and p.is_file()]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):
        return True  # someone else's process, or not ours to judge: keep its file
    return True


def write_manifest(out: Path, extra: dict | None = None) -> dict:
    """Consolidate the sidecars into `manifest.json` (called once the harvest is complete)."""
    infos = completed_shards(out)
    manifest = {
        "shards": [{"name": i.name, "rows": i.rows, "sha256": i.sha256, "bytes": i.bytes,
                    "examples": len(i.example_ids)} for i in infos],
        "rows": sum(i.rows for i in infos),
        "examples": sum(len(i.example_ids) for i in infos),
        **(extra or {}),
    }
    write_json_atomic(Path(out) / MANIFEST_JSON, manifest)
    return manifest


def shard_paths(out: Path) -> list[Path]:
    """The complete shards of a harvest, in manifest order (falls back to the sidecars)."""
    out = Path(out)
    manifest = out / MANIFEST_JSON
    if manifest.is_file():
        names = [s["name"] for s in json.loads(manifest.read_text())["shards"]]
    else:
        names = [i.name for i in completed_shards(out)]
    return [out / SHARDS / n for n in names]
