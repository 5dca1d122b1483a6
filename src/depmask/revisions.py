"""Revisions of what a long-lived output holds (decoded items, harvested states): each writer keeps
an ordered table of revision -> what changed in it, and an output written by an older revision is
told everything that changed since."""

from __future__ import annotations


def changes_since(revision: str | None, notes: dict[str, str]) -> str:
    """The notes of every revision after `revision` in `notes` (insertion order is revision order;
    all of them for None or a revision the table does not know)."""
    keys = list(notes)
    later = keys[keys.index(revision) + 1:] if revision in keys else keys
    return "; ".join(notes[k] for k in later) or "it changed"
