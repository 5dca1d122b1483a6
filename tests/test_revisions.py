"""`changes_since`: an output of an older revision is told every later revision's notes."""

from depmask.data_gen.harvest import _REVISION_NOTES, HARVEST_REVISION
from depmask.eval.items import DECODE_REVISION, REVISION_NOTES
from depmask.revisions import changes_since


def test_every_later_note_and_only_those():
    notes = {"r1": "one", "r2": "two", "r3": "three"}
    assert changes_since("r1", notes) == "two; three"
    assert changes_since("r2", notes) == "three"
    assert changes_since(None, notes) == changes_since("r0", notes) == "one; two; three"


def test_the_current_revisions_have_notes_and_come_last():
    assert list(REVISION_NOTES)[-1] == DECODE_REVISION and list(_REVISION_NOTES)[-1] == HARVEST_REVISION
    assert "RoBERTa" in changes_since("2026-11-30", REVISION_NOTES)
