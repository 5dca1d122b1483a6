"""Per-item results as append-only JSONL, one file per (task, policy, knobs) run: the resume log.

Each decoded batch appends its rows and fsyncs, so an interrupted evaluation loses at most the
batch in flight; a torn last line (the process died mid-write) is dropped when the file is read
again. `done_ids` tells the runner what to skip. This module stores and reads; it does not decode.

A run's knobs name a head by its path, and the path's weights can change (a retrained head
exported to the same directory, a new shipped head): resuming would then mix items of two
heads under one run. So each results file has a provenance sidecar (`<run>.provenance.json`:
the model's fingerprint, a digest of the weights of every knob that names a checkpoint
directory, the compiled-selection mode when there is one, the decoding settings and how the model
was loaded), written with the first rows; `check_provenance` refuses to resume a file whose
sidecar disagrees, naming both.

Two processes may decode into one output (two configs that share runs, as
`configs/eval/tiny-tasks-large-head.yaml` shares `tiny-tasks.yaml`'s). While one decodes a run it
holds that run's lock (`run_lock`, `<run>.lock`); the other waits, then reads what the first
wrote and decodes only what is missing. Without it both appended every item, and the run counted
each twice once it was read again. `unique_items` keeps the first row of each id, so a file that
holds repeats (written before the lock) still counts each item once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from depmask.revisions import changes_since

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs are not locked
    fcntl = None

PROVENANCE_SUFFIX = ".provenance.json"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def weights_digest(directory: str | Path) -> str | None:
    """sha256 (first 16 hex digits) of a checkpoint directory's weights file; None if it has none."""
    for name in _WEIGHT_FILES:
        path = Path(directory) / name
        if path.is_file():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return h.hexdigest()[:16]
    return None


def run_provenance(model_fingerprint: str | None, knobs: dict, compile_select: str | None = None,
                   decoding: dict | None = None, denoiser: dict | None = None) -> dict:
    """What decoded a run beyond its knobs: the model's fingerprint, for every knob whose value is
    a checkpoint directory (a head) the digest of its weights, and how its steps were compiled
    (`compile_select`, "jit" / "aot"; absent when eager, so records written before it match): a
    compiled step may order a float sum differently and tip a decision on a knife edge.
    `decoding`: the loop's settings (temperature, lengths, steps, the task's arguments) and
    `denoiser`: how the model was loaded (dtype, device type, mask / EOS ids, logit shift, capture
    layers); at temperature > 0 `decoding` also holds the sampling seed. Item ids name only the
    task, split and index (a synthetic task's also the seed of its draw; a benchmark's do not), so
    without these a re-run with another `--steps`, `--temperature` or sampling `--seed` would have
    reported the old run's items as its own."""
    out: dict = {"model": model_fingerprint}
    for key, value in sorted(knobs.items()):
        if isinstance(value, (str, Path)) and Path(value).expanduser().is_dir():  # `~/head` loads too
            digest = weights_digest(Path(value).expanduser())
            if digest is not None:
                out[f"{key}_weights"] = digest
    if compile_select is not None:
        out["compile_select"] = compile_select
    if decoding is not None:
        out["decoding"] = decoding
    if denoiser is not None:
        out["denoiser"] = denoiser
    out["revision"] = DECODE_REVISION
    return out


# recorded since 2026-11-30: a sidecar written before has none, and is not checked on them
_LATER_KEYS = ("decoding", "denoiser")
_LATER_SUBKEYS = {"decoding": ("seed",)}  # likewise within a record
# Bumped when a fix changes what the same settings decode. A record of another revision is resumed
# with a warning that says what changed (its items may differ from a fresh decode's).
DECODE_REVISION = "2026-11-30.2"
REVISION_NOTES = {  # in order: a record of one revision is told the notes of every later one
    "2026-11-30": "the oracle no longer probes (nor counts) a lone candidate; captured attention leaves the "
                  "model's output bit for bit as uncaptured; left-padded rows of models that take "
                  "`position_ids` are numbered from their first token; Dream's step count is in float32; "
                  "`logits_eos_inf` no longer reaches the oracle's baseline; CLAD's floor without attention "
                  "counts each row's own length",
    "2026-11-30.2": "the padding of RoBERTa-family models (which number positions from their pad id) holds "
                    "the pad id, so their left-padded rows read as alone (rows padded with the tokenizer's pad "
                    "id, as eval decode pads them, already did)",
}



def provenance_path(items_path: Path) -> Path:
    items_path = Path(items_path)
    return items_path.with_name(items_path.stem + PROVENANCE_SUFFIX)


def check_provenance(items_path: Path, provenance: dict, have_rows: bool) -> None:
    """Refuse (ValueError naming both) to resume results decoded by another model or head, or with
    other decoding settings (`run_provenance`).

    A file without a sidecar (written before sidecars existed) is resumed with a warning; a sidecar
    written before the decoding settings were recorded is checked on the rest only. With no rows
    yet, the sidecar is (re)written: the run starts clean."""
    side = provenance_path(items_path)
    if not have_rows:
        side.parent.mkdir(parents=True, exist_ok=True)
        side.write_text(json.dumps(provenance, indent=2, sort_keys=True))
        return
    if not side.is_file():
        warnings.warn(f"{items_path} has no provenance record ({side.name}): resuming it without checking "
                      "that the same model and head decoded it", stacklevel=2)
        return
    found = json.loads(side.read_text())
    if found.get("revision") != provenance.get("revision"):
        warnings.warn(f"{items_path} was decoded by depmask revision {found.get('revision') or 'before 2026-11-30'}, "
                      f"this is {provenance.get('revision')}: its items are resumed as they are, though since then "
                      f"{changes_since(found.get('revision'), REVISION_NOTES)}. Delete the file (and its "
                      "sidecar) to decode them again", stacklevel=2)
    found = {k: v for k, v in found.items() if k != "revision"}
    mine = {k: v for k, v in provenance.items() if k != "revision" and (k not in _LATER_KEYS or k in found)}
    for key, subkeys in _LATER_SUBKEYS.items():
        if isinstance(found.get(key), dict) and isinstance(mine.get(key), dict):
            mine[key] = {k: v for k, v in mine[key].items() if k not in subkeys or k in found[key]}
    if found != mine:
        flat_found, flat_mine = _flat(found), _flat(mine)
        diff = {k: (flat_found.get(k), flat_mine.get(k)) for k in sorted(set(flat_found) | set(flat_mine))
                if flat_found.get(k) != flat_mine.get(k)}
        raise ValueError(
            f"{items_path} holds items decoded with a different model, head, compiled selection or "
            "decoding settings: "
            + "; ".join(f"{k} was {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
            + ". Use another --output, or delete the file (and its sidecar) to decode it again"
        )


def _flat(record: dict) -> dict:
    """`{"decoding": {"steps": 8}}` → `{"decoding.steps": 8}` (one level), to name what differs."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()} or {key: value})
        else:
            out[key] = value
    return out


def plain_value(v):
    """A NumPy scalar as its Python value, a path as its text; anything else as it is."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def run_slug(policy: str, knobs: dict) -> str:
    """A file-name-safe, stable name for a (policy, knobs) run."""
    # a NumPy scalar names the run its value does (`np.int64(2)` hashed as the text "2": another
    # file, decoded again); a head directory spelled with a trailing slash or `./` is the same run
    knobs = {k: plain_value(v) for k, v in knobs.items()}
    knobs = {k: os.path.normpath(v) if k == "head" and isinstance(v, str) else v for k, v in knobs.items()}
    digest = hashlib.sha1(json.dumps(knobs, sort_keys=True, default=str).encode()).hexdigest()[:8]
    short = "_".join(f"{k}={v}" for k, v in sorted(knobs.items()) if isinstance(v, (int, float)))
    slug = re.sub(r"[^A-Za-z0-9_.=-]", "-", f"{policy}_{short}" if short else policy)
    return f"{slug}_{digest}"


def read_items(path: Path) -> list[dict]:
    """Rows of a results file; a torn final line is dropped (and cut from the file). A final line
    without its newline is torn even when it parses: the next append would continue it. A whole
    line that does not parse (a torn line that later appends continued, or interleaved writes by
    two processes before the run lock) is skipped with a warning naming its line numbers and left
    in the file; the rows after it are kept (they were cut with it, and decoded again)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, bad, good_bytes = [], [], 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break
            good_bytes += len(line)
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} line(s) that are not JSON rows (line(s) "
                      f"{', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''}); their items are "
                      "decoded again", stacklevel=2)
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


def unique_items(rows: Iterable[dict], wanted: set[str]) -> list[dict]:
    """The rows whose id is in `wanted`, the first of each id only, in file order."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["id"] in wanted and r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
    return out


@contextlib.contextmanager
def run_lock(items_path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on a run (`<run>.lock` beside its results file) for the block:
    another process decoding the same run waits here (`on_wait` is called first, to say so). The
    lock is the operating system's (`flock`): a killed holder releases it. No lock without fcntl."""
    if fcntl is None:
        yield
        return
    path = Path(items_path).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
