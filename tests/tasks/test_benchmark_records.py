"""Benchmark records whose fields are of the wrong kind are refused, naming the file, record and
field: `str()` turned a column-oriented export or a list stored as text into garbage items that
decoded and graded (MBPP at 0 %) without a word."""

import json

import pytest

from depmask.tasks.benchmarks import MBPP, HumanEval, Math500
from tests.tasks.benchmark_rows import HUMANEVAL_ROWS, MATH_ROWS, MBPP_ROWS, _jsonl


def test_a_column_oriented_json_file_is_refused_with_how_to_write_records(tmp_path):
    """pandas' `DataFrame.to_json()` writes {field: {row: value}}: five problems became one item
    whose prompt and reference were a dict's text."""
    columns = {key: {str(i): row.get(key) for i, row in enumerate(MATH_ROWS)} for key in ("problem", "solution")}
    path = tmp_path / "math500_test.json"
    path.write_text(json.dumps(columns))
    with pytest.raises(ValueError, match=r"holds columns .* `orient='records'` .* or as JSON Lines"):
        Math500(path=path, shots=0).examples("test")
    path.write_text(json.dumps(MATH_ROWS[0]))  # one record under a .json name is still one record
    assert [ex.answer for ex in Math500(path=path, shots=0).examples("test")] == [r"\frac{3}{4}"]


def test_text_fields_of_another_kind_are_named_and_a_numeric_answer_is_read():
    rows = [{**MATH_ROWS[0], "problem": {"0": "What is 1/2 + 1/4?"}}]
    with pytest.raises(ValueError, match=r"record 0: `problem` must be text, got dict"):
        Math500(path=None, shots=0)._checked_example(rows[0], 0, "test")
    ex = Math500(path=None, shots=0)._checked_example({"problem": "Compute 2+3.", "answer": 5}, 0, "test")
    assert ex.answer == "5"
    with pytest.raises(ValueError, match=r"record 0: `entry_point` must be text, got list"):
        HumanEval(path=None)._checked_example({**HUMANEVAL_ROWS[0], "entry_point": ["f"]}, 0, "test")


def test_an_mbpp_test_list_stored_as_text_is_refused(tmp_path):
    """A CSV-style export stores `test_list` as the text of a list: it was iterated into
    one-character 'tests', the prompt printed one character per line, and every item failed."""
    rows = [{**r, "test_list": str(r["test_list"])} for r in MBPP_ROWS]
    path = _jsonl(tmp_path / "mbpp" / "full.jsonl", rows)
    with pytest.raises(ValueError, match=r"mbpp data from .*full.jsonl: record \d+: `test_list` must be a list of "
                                         r"texts, got str"):
        MBPP(path=path, shots=0).examples("test")


@pytest.mark.parametrize("task_id", ["Mbpp/2", None, 2.5, True])
def test_an_mbpp_record_without_a_whole_number_task_id_is_named(tmp_path, task_id):
    """MBPP+ / EvalPlus ids ('Mbpp/2') raised a bare int() error naming no file, and a record
    without `task_id` a KeyError traceback: the split is read from the ids."""
    rows = [dict(MBPP_ROWS[0]), *MBPP_ROWS[1:]]
    rows[0]["task_id"] = task_id
    path = _jsonl(tmp_path / "mbpp" / "full.jsonl", rows)
    with pytest.raises(ValueError, match=r"mbpp data from .*full.jsonl: record 0 has no whole-number `task_id`"):
        MBPP(path=path, shots=0).examples("test")
    rows[0]["task_id"] = "1"  # a number written as text still reads
    assert MBPP(path=_jsonl(tmp_path / "ok" / "full.jsonl", rows), shots=0).examples("test")


def test_a_directory_of_hub_shards_is_read_whole(tmp_path):
    """A directory as the Hub ships it (`test-00000-of-00002.parquet`, ...) was not found: only
    `<split>.parquet` was looked for, and a shard file had to be named by itself."""
    import datasets

    d = tmp_path / "math"
    d.mkdir()
    datasets.Dataset.from_list(MATH_ROWS[:1]).to_parquet(str(d / "test-00000-of-00002.parquet"))
    datasets.Dataset.from_list(MATH_ROWS[1:]).to_parquet(str(d / "test-00001-of-00002.parquet"))
    datasets.Dataset.from_list(MATH_ROWS).to_parquet(str(d / "train-00000-of-00001.parquet"))  # not the test split
    examples = Math500(path=d, shots=0).examples("test")
    assert sorted(ex.answer for ex in examples) == ["4", r"\frac{3}{4}"]
    (d / "test-00001-of-00002.parquet").unlink()  # a partial download: half the split, silently
    with pytest.raises(ValueError, match=r"Hub shards are incomplete \(1 of 2; missing shard\(s\) \[1\]\)"):
        Math500(path=d, shots=0).examples("test")
