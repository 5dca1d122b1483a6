"""`depmask harvest verify DIR`: check a harvest directory without trusting any of it.

Checks `harvest.json`, every sidecar and shard (readable, sha256, schema, fingerprint, row counts),
that no example or (example, step) state appears twice, that every expected example is present,
and that `manifest.json` agrees with the shards. Every problem is reported by file name, as a line
of text, never as a stack trace. `load_harvest` runs the same checks before it opens the shards
memory-mapped for training. This module reads; it never repairs (re-running the harvest does).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from depmask.data_gen.schema import SCHEMA_VERSION, check_schema
from depmask.data_gen.shards import (
    HARVEST_JSON,
    MANIFEST_JSON,
    SHARDS,
    TMP_PREFIX,
    file_sha256,
    harvest_id,
    own_temporaries,
    read_sidecar,
    sidecar_name,
)

DATASETS_CACHE_PREFIX = "cache-"
"""`datasets` writes the result of a `map` / `filter` over memory-mapped shards as `cache-<hash>.arrow`
in the shards' folder; such files are skipped, neither shards nor problems."""


@dataclass
class Report:
    directory: str
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    rows: int = 0
    examples: int = 0
    expected_examples: int | None = None
    fingerprint: str | None = None
    hidden_size: int | None = None
    harvest: str | None = None  # `harvest_id` of harvest.json

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        head = (f"{self.directory}: {self.shards} shards, {self.rows} states, "
                f"{self.examples}/{self.expected_examples} examples, fingerprint {self.fingerprint}")
        if self.ok:
            return head + "\nOK"
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems) + f"\n{len(self.problems)} problem(s)"


def read_shard_table(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


def verify_harvest(directory: str | Path) -> Report:
    out = Path(directory)
    report = Report(str(out))
    if not out.is_dir():
        report.problems.append(f"{out}: not a directory")
        return report
    try:
        spec = json.loads((out / HARVEST_JSON).read_text())
        report.fingerprint, report.hidden_size = spec["fingerprint"], int(spec["hidden_size"])
        report.expected_examples = int(spec["examples"])
        report.harvest = harvest_id(spec)
        if spec.get("schema_version") != SCHEMA_VERSION:
            report.problems.append(f"{HARVEST_JSON}: schema_version {spec.get('schema_version')}, expected {SCHEMA_VERSION}")
    except FileNotFoundError:
        report.problems.append(f"{HARVEST_JSON}: missing — not a harvest directory")
        return report
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        report.problems.append(f"{HARVEST_JSON}: unreadable ({type(e).__name__}: {e})")
        return report
    per_example: Counter[str] = Counter()
    states: Counter[tuple[str, int]] = Counter()
    shard_dir = out / SHARDS
    files = sorted(shard_dir.iterdir()) if shard_dir.is_dir() else []
    sidecars = {p.name for p in files if p.suffix == ".json"}
    for p in own_temporaries(out):
        report.problems.append(f"{p.name}: temporary file of an interrupted write of {out.name}'s own files "
                               "(a finished run of the harvest removes it; or delete it)")
    for p in files:
        if p.name.startswith(TMP_PREFIX):
            report.problems.append(f"{p.name}: temporary file of an interrupted write (re-run the harvest to clean up)")
        elif p.suffix == ".arrow" and p.name.startswith(DATASETS_CACHE_PREFIX):
            continue  # `datasets` caches a map / filter over the loaded shards next to them: not a shard
        elif p.suffix == ".arrow" and sidecar_name(p.name) not in sidecars:
            report.problems.append(f"{p.name}: shard without a sidecar (incomplete write)")
        elif p.suffix not in (".arrow", ".json") or not p.name.startswith("shard-"):
            report.problems.append(f"{p.name}: foreign file in {SHARDS}/")
    for name in sorted(sidecars):
        if not name.startswith("shard-"):
            continue
        _check_shard(shard_dir, name, report, per_example, states)
    report.examples = len(per_example)
    report.problems += [f"example {e!r} is in {n} shards" for e, n in per_example.items() if n > 1]
    dup = [s for s, n in states.items() if n > 1]
    if dup:
        report.problems.append(f"{len(dup)} (example, step) states appear more than once, e.g. {dup[0]}")
    if report.expected_examples is not None and report.examples < report.expected_examples:
        report.problems.append(f"incomplete: {report.examples} of {report.expected_examples} examples harvested "
                               "(run the same harvest command again to resume)")
    elif report.expected_examples is not None and report.examples > report.expected_examples:
        report.problems.append(f"{report.examples} examples harvested, more than the {report.expected_examples} "
                               f"{HARVEST_JSON} asks for: shards of another harvest (a run of the harvest does not "
                               "remove them); move the shards holding the extra examples out of "
                               f"{SHARDS}/ with their sidecars")
    elif "examples_sha256" in spec:  # as many examples as expected: are they the expected ones?
        present = hashlib.sha256("\n".join(sorted(per_example)).encode()).hexdigest()
        if present != spec["examples_sha256"]:
            report.problems.append(f"the harvested examples are not the ones {HARVEST_JSON} asks for "
                                   "(its examples_sha256 differs): shards of another harvest?")
    _check_manifest(out, report)
    return report


def _check_shard(shard_dir: Path, sidecar: str, report: Report, per_example: Counter, states: Counter) -> None:
    try:
        info = read_sidecar(shard_dir / sidecar)
    except ValueError as e:
        report.problems.append(str(e))
        return
    path = shard_dir / info.name
    if not path.is_file():
        report.problems.append(f"{sidecar}: its shard {info.name} is missing")
        return
    if info.fingerprint != report.fingerprint:
        report.problems.append(f"{info.name}: foreign shard, fingerprint {info.fingerprint!r} ≠ harvest {report.fingerprint!r}")
        return
    if info.harvest is not None and info.harvest != report.harvest:
        report.problems.append(f"{info.name}: written by another harvest (harvest id {info.harvest}, this one's "
                               f"{report.harvest}: other settings or examples under the same name); move it and "
                               f"{sidecar} out of {SHARDS}/")
        return
    if path.stat().st_size != info.bytes:
        report.problems.append(f"{info.name}: contents do not match its sidecar (size {path.stat().st_size} vs "
                               f"{info.bytes} bytes; truncated or modified; the same harvest command harvests "
                               "its examples again)")
        return
    if file_sha256(path) != info.sha256:  # same size: a resume reads sizes only, so it would keep this shard
        report.problems.append(f"{info.name}: contents do not match its sidecar (same size, different sha256: "
                               f"modified); delete {info.name} and {sidecar}, then run the same harvest command "
                               "again to harvest its examples again")
        return
    try:
        table = read_shard_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        report.problems.append(f"{info.name}: unreadable Arrow stream ({e})")
        return
    schema_problems = check_schema(table.schema, report.hidden_size)
    if schema_problems:
        report.problems.append(f"{info.name}: schema differs: {'; '.join(schema_problems)}")
        return
    fps = set(table.column("fingerprint").to_pylist())
    if fps - {report.fingerprint}:
        report.problems.append(f"{info.name}: rows from another model (fingerprints {sorted(fps)})")
    if table.num_rows != info.rows:
        report.problems.append(f"{info.name}: {table.num_rows} rows, its sidecar says {info.rows} (the sidecar was "
                               f"edited or is another shard's); delete {info.name} and {sidecar}, then run the same "
                               "harvest command again to harvest its examples again")
    ids = table.column("example_id").to_pylist()
    stray = set(ids) - set(info.example_ids)
    if stray:
        report.problems.append(f"{info.name}: rows of examples its sidecar does not list, e.g. {sorted(stray)[0]!r}")
    counts = Counter(ids)
    wrong = [e for e in info.example_ids if counts[e] != info.states.get(e, 0)]
    if wrong or set(info.states) - set(info.example_ids):
        e = wrong[0] if wrong else sorted(set(info.states) - set(info.example_ids))[0]
        report.problems.append(f"{info.name}: example {e!r} has {counts[e]} rows, its sidecar says "
                               f"{info.states.get(e, 0)} states (the sidecar was edited or is another shard's); "
                               f"delete {info.name} and {sidecar}, then run the same harvest command again")
    for e in info.example_ids:
        per_example[e] += 1
    for e, s in zip(ids, table.column("step").to_pylist()):
        states[(e, s)] += 1
    report.shards += 1
    report.rows += table.num_rows


def _check_manifest(out: Path, report: Report) -> None:
    shard_problems = bool(report.problems)
    path = out / MANIFEST_JSON
    if not path.is_file():
        report.problems.append(f"{MANIFEST_JSON}: missing (the harvest has not finished; run it again to resume)")
        return
    try:
        manifest = json.loads(path.read_text())
        listed = {s["name"] for s in manifest["shards"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        report.problems.append(f"{MANIFEST_JSON}: unreadable ({type(e).__name__}: {e})")
        return
    names = [s["name"] for s in manifest["shards"]]
    for n in sorted({n for n in names if names.count(n) > 1}):
        report.problems.append(f"{MANIFEST_JSON}: lists {n} {names.count(n)} times (its states would load as many times)")
    spec = {"fingerprint": report.fingerprint, "hidden_size": report.hidden_size}
    if not shard_problems:  # totals over every shard, when each was read
        spec.update(rows=report.rows, examples=report.examples)
    for key, value in spec.items():  # the figures of the shards checked above, and harvest.json's
        if key in manifest and manifest[key] != value:
            report.problems.append(f"{MANIFEST_JSON}: {key} {manifest[key]!r}, the shards (and {HARVEST_JSON}) "
                                   f"say {value!r}")
    present = {p.name for p in (out / SHARDS).glob("shard-*.arrow")}
    for n in sorted(listed - present):
        report.problems.append(f"{MANIFEST_JSON}: lists {n}, which is missing")
    for n in sorted(present - listed):
        report.problems.append(f"{n}: not in {MANIFEST_JSON}")
    for entry in manifest["shards"]:  # its figures are the sidecars' (the shards themselves are checked above)
        sidecar = out / SHARDS / sidecar_name(str(entry.get("name", "")))
        try:
            info = read_sidecar(sidecar)
        except (ValueError, OSError):
            continue  # reported with the shard
        for key, value in (("rows", info.rows), ("sha256", info.sha256), ("bytes", info.bytes)):
            if key in entry and entry[key] != value:
                report.problems.append(f"{MANIFEST_JSON}: {info.name} {key} {entry[key]!r}, its sidecar says {value!r}")
