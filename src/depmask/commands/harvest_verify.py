"""`depmask harvest verify DIR`: print a harvest directory's check report; exit 1 on any problem."""

from __future__ import annotations

from depmask.data_gen.verify import verify_harvest


def harvest_verify(directory: str) -> None:
    """Check a harvest directory: manifest, schema, fingerprints, counts, duplicates.

    Args:
        directory: the harvest's output directory.
    """
    from pathlib import Path

    if not Path(directory).expanduser().is_dir():  # an argument error (status 2), not a damaged harvest (1)
        raise ValueError(f"`directory` ({directory!r}) is not a directory (a harvest's output, e.g. "
                         "outputs/harvest/tiny-tasks after `depmask harvest --config configs/harvest/tiny-tasks.yaml`)")
    report = verify_harvest(Path(directory).expanduser())
    print(report.text())
    if not report.ok:
        raise SystemExit(1)
