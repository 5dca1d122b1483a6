"""Stored verdicts are judged again when another grader gave them (`eval.regrade`)."""

import json

import pytest

from depmask.eval.items import read_items
from depmask.eval.regrade import rewrite_items
from depmask.eval.runner import PolicySweep, run_decode_eval
from depmask.models import HFDenoiser
from depmask.tasks.adapter import TaskAdapter
from tests.conftest import EMBEDDED


def test_a_resumed_eval_grades_old_verdicts_again(tmp_path):
    den = HFDenoiser.from_pretrained(EMBEDDED)
    run = [PolicySweep("low_confidence")]
    (first,) = run_decode_eval(den, ["sort"], run, tmp_path, n=6, batch_size=3)
    (path,) = (tmp_path / "items" / "sort").glob("*.jsonl")
    rows = read_items(path)
    grader = TaskAdapter.build("sort").grader
    assert {r["grader"] for r in rows} == {grader} and first["accuracy"] == 1.0
    # an older grader's verdicts (or a file from before the record): three wrong, one without a grader
    for r in rows[:3]:
        r["correct"], r["grader"] = False, "0123456789abcdef"
    del rows[3]["grader"]
    # and an old grader's pass of a wrong completion: withdrawn
    rows[4]["completion"], rows[4]["correct"], rows[4]["grader"] = "1", True, "0123456789abcdef"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=r"4 of 5 stored verdict\(s\) changed"):
        (again,) = run_decode_eval(den, ["sort"], run, tmp_path, n=6, batch_size=3)
    assert again["accuracy"] == pytest.approx(5 / 6) and again["n"] == 6  # was 3 / 6: the old verdicts counted
    assert [r["correct"] for r in read_items(path)] == [True, True, True, True, False, True]
    assert {r["grader"] for r in read_items(path)} == {grader}
    before = path.read_bytes()
    (third,) = run_decode_eval(den, ["sort"], run, tmp_path, n=6, batch_size=3)  # nothing stale: untouched
    assert path.read_bytes() == before and third["accuracy"] == pytest.approx(5 / 6)


def test_rewriting_keeps_the_lines_that_are_not_rows(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(b'{"id": "a", "correct": false}\nnot json\r\n{"id": "b", "correct": true}\n')
    with pytest.warns(UserWarning, match="skipped 1 line"):
        rows = read_items(path)
    rows[0]["correct"] = True
    rewrite_items(path, rows)
    assert path.read_bytes() == b'{"id": "a", "correct": true}\nnot json\r\n{"id": "b", "correct": true}\n'
    with pytest.raises(RuntimeError, match="fewer rows than were read"):
        rewrite_items(path, [*rows, {"id": "c"}])


def test_the_grader_digest_reads_code_files_only(tmp_path):
    from depmask.tasks.adapter import _source_digest

    (tmp_path / "a.py").write_text("x = 1\n")
    before = _source_digest(tmp_path)
    _source_digest.cache_clear()
    (tmp_path / "._a.py").write_bytes(b"\x00\x05\x16\x07")  # a copied AppleDouble file
    (tmp_path / ".#a.py").symlink_to(tmp_path / "gone")  # an editor's lock link, dangling
    (tmp_path / "notes.txt").write_text("not code")
    assert _source_digest(tmp_path) == before
    _source_digest.cache_clear()
    (tmp_path / "a.py").write_text("x = 2\n")
    assert _source_digest(tmp_path) != before


def test_the_graders_are_hashed_when_the_grading_code_is_imported():
    # not at the first run, maybe hours later: code changed on disk meanwhile would stamp old verdicts
    import depmask.tasks.adapter as adapter

    assert {p.name for p in adapter._GRADERS} == {"tasks", "benchmarks"}
    assert TaskAdapter.build("sort").grader in adapter._GRADERS.values()
