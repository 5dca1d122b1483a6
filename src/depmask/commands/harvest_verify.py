"""`depmask harvest verify DIR`: print a harvest directory's check report; exit 1 on any problem."""

from __future__ import annotations

from depmask.data_gen.verify import verify_harvest


def harvest_verify(directory: str) -> None:
    """Check a harvest directory: manifest, schema, fingerprints, counts, duplicates.

    Args:
        directory: the harvest's output directory.
    """
    report = verify_harvest(directory)
    print(report.text())
    if not report.ok:
        raise SystemExit(1)
