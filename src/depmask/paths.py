"""Output locations given on the command line or in a config, checked before any work.

`output_dir(name, path)` expands `~` (a YAML value or `--output=~/x` reaches depmask unexpanded,
and became a directory literally named `~`) and refuses a path that exists as a file, or below a
file, naming the argument: found at the first write, such a path used to fail after the decoding,
scoring or training it was to hold.
"""

from __future__ import annotations

import os
from pathlib import Path


def output_dir(name: str, path: str | os.PathLike) -> Path:
    """`path` with `~` expanded; ValueError naming `name` when it is empty (it would be the working
    directory), or when it, or a folder above it, is a file."""
    if not str(path).strip():
        raise ValueError(f"`{name}` ({str(path)!r}) is empty; give a directory")
    out = Path(path).expanduser()
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"lies below a file ({p})"
                raise ValueError(f"`{name}` ({str(path)!r}) {what}; give a directory")
            break
    return out


def existing_config(name: str, path: str | os.PathLike) -> tuple[Path, dict | None]:
    """`path` as an output directory (`output_dir`), and the `config.json` already there: None when
    there is none, {} when it is not a JSON object. Exports check it before training, so that a
    model's or a head's directory is not replaced by the other kind."""
    import json

    directory = output_dir(name, path)
    config = directory / "config.json"
    if not config.is_file():
        return directory, None
    try:
        found = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        found = None
    return directory, found if isinstance(found, dict) else {}
