"""Grading rules and record checks that a realistic one-line slip in the benchmark code would
change without any other test noticing (each test here failed on such a mutant of the code):
what counts as a correct GSM8K / MATH answer, and how bad benchmark records are refused."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from depmask.tasks import Example
from depmask.tasks.benchmarks import (
    GSM8K,
    MBPP,
    DataNotFoundError,
    Math500,
    extract_gsm8k,
    extract_math,
    last_boxed,
    math_equal,
    normalize_math,
    normalize_number,
    read_records,
)
from depmask.tasks.benchmarks.base import completion_text
from depmask.tasks.benchmarks.extract import gsm8k_reference
from depmask.tasks.benchmarks.latex_value import latex_value
from depmask.tasks.benchmarks.source import DataSpec, download_allowed, locate_records
from tests.tasks.benchmark_rows import ENV_VARS, GSM8K_ROWS, MBPP_ROWS, _jsonl


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


# ---- GSM8K -----------------------------------------------------------------------------------


def test_gsm8k_percent_is_read_and_a_boxed_division_by_zero_is_no_answer():
    """`normalize_number` accepts a trailing `%` (as documented); a boxed `\\frac{1}{0}` is no
    number (it must not raise: one odd completion would stop the whole grading)."""
    assert normalize_number("12.5%") == "12.5" and gsm8k_reference("half of them.\n#### 50%") == "50"
    assert extract_gsm8k(r"so \boxed{\frac{1}{0}}") is None
    assert extract_gsm8k(r"so \boxed{\frac{0}{0}}") is None


def test_gsm8k_grades_by_value_and_cuts_at_every_end_of_text_marker():
    """A reference written `1,000` or `72.00` matches `1000` / `72`; the text after an
    end-of-text marker left in decoded text (`<|eot_id|>`, `<|im_end|>`, `</s>`) is not read."""
    bench = GSM8K(shots=0)
    assert bench.grade_one(Example("gsm8k:test:0", "gsm8k", "q", "1,000"), "#### 1000").correct
    assert bench.grade_one(Example("gsm8k:test:0", "gsm8k", "q", "72.00"), "So 72").correct
    ex = Example("gsm8k:test:0", "gsm8k", "q", "18")
    for marker in ("<|eot_id|>", "<|im_end|>", "</s>", "<|end_of_text|>", "[EOS]"):
        assert bench.grade_one(ex, f"She has 18 apples{marker} 3 4 99").correct, marker


def test_gsm8k_zero_shot_prompt_strips_the_question():
    bench = GSM8K(shots=0)
    ex = Example("gsm8k:test:0", "gsm8k", "  How many?\n\n", "1")
    assert bench.prompt_text(ex) == "How many?\nPlease reason step by step, and put your final answer within \\boxed{}."


# ---- MATH extraction and normalisation -------------------------------------------------------


def test_math_extraction_takes_the_last_final_answer_and_skips_escaped_braces():
    text = ("Final Answer: The final answer is $3$. I hope it is correct.\n"
            "Final Answer: The final answer is $5$. I hope it is correct.")
    assert extract_math(text) == "5"
    # `\{` / `\}` do not count as braces: a piecewise `\left\{ ... \right.` box closes
    assert last_boxed(r"f(x) = \boxed{\left\{ 1 \right.}") == r"\left\{ 1 \right."


@pytest.mark.parametrize("prediction, reference, equal", [
    (r"\frac1{2}", "0.5", True),                  # `\frac1{b}` → `\frac{1}{b}`
    ("(E)", "E", True),                           # every choice letter A–E
    (r"\text{(E)}", "E", True),
    (r"3 \text{ and } 5", "5, 3", True),          # `and` separates answers like `or`
    # text is dropped only when every word is a unit (`hour`, `minute` are)
    (r"\text{hour hand}", r"\text{minute hand}", False),
    # negative numbers are not their absolute value
    ("-3", "3", False),
    ("-0.5", r"\frac{1}{2}", False),
    (r"-\frac{3}{4}", "3/4", False),
])
def test_math_normalisation_rules(prediction, reference, equal):
    assert math_equal(prediction, reference) is equal


def test_normalize_math_keeps_a_box_that_is_not_the_whole_answer_and_fixes_brace_less_fracs():
    assert normalize_math(r"\boxed{3}^2") == r"\boxed{3}^2"
    assert normalize_math(r"\frac1{2}") == r"\frac{1}{2}"
    assert normalize_math(r"\text{second quadrant}") == "secondquadrant"


# ---- closed-form values ----------------------------------------------------------------------


@pytest.mark.parametrize("prediction, reference", [
    # a rational close to an irrational is not it: denominators above 10^6 never, and the
    # tolerance is a relative 1e-12 (355/113 is pi to 7 digits)
    (r"\frac{1414213562373}{10^{12}}", r"\sqrt{2}"),
    (r"\frac{355}{113}", r"\pi"),
    (r"\frac{1414213}{1000000}", r"\sqrt{2}"),
])
def test_rational_approximations_of_irrationals_are_wrong(prediction, reference):
    assert not math_equal(prediction, reference)
    assert not math_equal(reference, prediction)


def test_math_equal_is_symmetric_for_decimals_against_float_values():
    """The decimal rule (an answer written with a decimal point never equals a float value) holds
    whichever side is the prediction."""
    x = r"\sqrt{2}\cdot\sqrt{2}-0.5"
    assert math_equal(x, "1.5") == math_equal("1.5", x)


def test_exact_values_stay_exact():
    """Exact integer roots past float precision, rational powers with a numerator above 1, and a
    power `^-1` written without braces."""
    got = latex_value(r"\sqrt{9007199254740993^{2}}")  # 2^53 + 1: float rounding is off by one
    assert got is not None and got.exact and got.value == 9007199254740993
    got = latex_value(r"8^{\frac{2}{3}}")
    assert got is not None and got.exact and got.value == Fraction(4)
    assert math_equal("10^-2", r"\frac{1}{100}") and math_equal("2^-1", "0.5")


# ---- elements: tuples, intervals, sets -------------------------------------------------------


@pytest.mark.parametrize("prediction, reference, equal", [
    ("[0.5, 1]", r"[\frac12, 1]", True),                           # closed interval element-wise
    (r"\{(1, 0.5), (2, 3)\}", r"\{(2,3),(1,\frac{1}{2})\}", True),  # a set of tuples (nested)
    ("((0.5, 1), 2)", r"((\frac12, 1), 2)", True),
    ("(1, 2), (3, 4)", "(3, 4), (1, 2)", True),                     # a list of points, any order
    ("(1, 2), (3, 4)", "(1, 3), (2, 4)", False),
    # only a name's `name =` is dropped, not an equation's left side
    ("x=3, y=1", "3, 1", True),
    ("x+y=3, x-y=1", "3, 1", False),
])
def test_math_elements(prediction, reference, equal):
    assert math_equal(prediction, reference) is equal


# ---- records ---------------------------------------------------------------------------------


def test_record_fields_of_the_wrong_kind_are_refused():
    """A bool is not a numeric answer, a `test_list` of numbers is not a list of asserts, and a
    MATH record with neither `answer` nor a boxed solution is refused (not graded against '')."""
    with pytest.raises(ValueError, match=r"record 0: `answer` must be text, got bool"):
        Math500(shots=0)._checked_example({"problem": "p", "answer": True}, 0, "test")
    with pytest.raises(ValueError, match=r"record 3: `test_list` must be a list of texts, got list"):
        MBPP(shots=0)._checked_example({**MBPP_ROWS[5], "test_list": [1, 2, 3]}, 3, "test")
    with pytest.raises(ValueError, match=r"record 0: math500 record 0 has neither `answer` nor a \\boxed\{\} solution"):
        Math500(shots=0)._checked_example({"problem": "p", "solution": "no box here"}, 0, "test")


def test_json_files_records_and_their_errors(tmp_path):
    """`.json` data: `{"data": [...]}` is unwrapped, a byte-order mark is read past, one record
    holding lists is a record (not columns), a scalar is refused, and a list entry that is not an
    object is named with its record index."""
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": GSM8K_ROWS[:2]}))
    assert read_records(wrapped) == GSM8K_ROWS[:2]
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(GSM8K_ROWS[:2]).encode())
    assert read_records(bom) == GSM8K_ROWS[:2]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(MBPP_ROWS[5]))  # `test_list` is a list, `task_id` an int
    assert read_records(one) == [MBPP_ROWS[5]]
    scalar = tmp_path / "scalar.json"
    scalar.write_text('"just text"')
    with pytest.raises(ValueError, match="must hold a list of records"):
        read_records(scalar)
    mixed = tmp_path / "test.json"
    mixed.write_text(json.dumps([GSM8K_ROWS[0], 5]))
    with pytest.raises(ValueError, match=r"gsm8k data from .*test.json: record 1 is a int, not a record"):
        GSM8K(path=mixed, shots=0).examples("test")


def test_examples_refuse_a_negative_n_and_grade_refuses_mismatched_lengths(tmp_path):
    bench = GSM8K(path=_jsonl(tmp_path / "test.jsonl", GSM8K_ROWS[:3]), shots=0)
    with pytest.raises(ValueError, match=r"`n` \(-1\) must be >= 0"):
        bench.examples("test", n=-1)
    ex = bench.examples("test")[0]
    with pytest.raises(ValueError, match="2 examples but 1 completions"):
        bench.grade([ex, ex], ["#### 2"])


def test_completion_text_stops_before_the_first_eos():
    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return ",".join(map(str, ids))

    assert completion_text([5, 6, 2, 7, 2], Tok(), eos_ids=[2]) == "5,6"
    assert completion_text([5, 6], Tok(), eos_ids=[2]) == "5,6"


# ---- MBPP records ----------------------------------------------------------------------------


def test_mbpp_split_boundaries_order_and_fields(tmp_path):
    """Test is 11–510 and validation 511–600 (the paper's ranges), a split is in task-id order
    whatever the file's order, the sanitized variant's `prompt` and `test_imports` are read."""
    rows = [{**MBPP_ROWS[5], "task_id": tid} for tid in (511, 510, 12, 11)]
    path = _jsonl(tmp_path / "mbpp" / "full.jsonl", rows)
    assert [e.meta["task_id"] for e in MBPP(path=path, shots=0).examples("test")] == [11, 12, 510]
    assert [e.meta["task_id"] for e in MBPP(path=path, shots=0).examples("validation")] == [511]
    sanitized = {"task_id": 11, "prompt": "Write f.", "code": "def f(): return 1",
                 "test_list": ["assert f() == 1"], "test_imports": ["import math", "import re"]}
    ex = MBPP(shots=0)._checked_example(sanitized, 0, "test")
    assert ex.prompt == "Write f." and ex.meta["test_setup_code"] == "import math\nimport re"


def test_mbpp_more_shots_than_prompt_problems_is_refused(tmp_path):
    path = _jsonl(tmp_path / "mbpp" / "full.jsonl", MBPP_ROWS)  # the prompt split holds 5 problems
    bench = MBPP(path=path, shots=6)
    ex = bench.examples("test")[0]
    with pytest.raises(ValueError, match=r"`shots` \(6\) exceeds the 5 problems of the MBPP prompt split"):
        bench.prompt_text(ex)


# ---- where data comes from -------------------------------------------------------------------


@pytest.mark.parametrize("value, allowed", [("1", True), ("true", True), (" YES ", True), ("0", False),
                                            ("no", False), ("", False)])
def test_download_allowed_reads_the_environment(monkeypatch, value, allowed):
    monkeypatch.setenv("DEPMASK_ALLOW_DOWNLOAD", value)
    assert download_allowed(None) is allowed
    assert download_allowed(False) is False


def test_split_names_shards_and_the_data_dirs_order(tmp_path, monkeypatch):
    """`gsm8k.train.jsonl` names its split; Hub shards of two different counts are refused (two
    downloads in one folder would be read as one split); in `$DEPMASK_DATA_DIR` the split's own
    file comes before the `<name>/` directory."""
    dotted = _jsonl(tmp_path / "a" / "gsm8k.train.jsonl", GSM8K_ROWS)
    with pytest.raises(DataNotFoundError, match="named for split 'train', not 'test'"):
        GSM8K(path=dotted).examples("test")
    shards = tmp_path / "shards"
    _jsonl(shards / "test-00000-of-00001.jsonl", GSM8K_ROWS[:2])
    _jsonl(shards / "test-00000-of-00002.jsonl", GSM8K_ROWS[:1])
    _jsonl(shards / "test-00001-of-00002.jsonl", GSM8K_ROWS[1:2])
    with pytest.raises(ValueError, match="Hub shards are incomplete"):
        GSM8K(path=shards).examples("test")
    data = tmp_path / "data"
    _jsonl(data / "gsm8k" / "test.jsonl", GSM8K_ROWS[:2])
    _jsonl(data / "gsm8k_test.jsonl", GSM8K_ROWS[:3])
    monkeypatch.setenv("DEPMASK_DATA_DIR", str(data))
    bench = GSM8K()
    assert len(bench.examples("test")) == 3 and bench.sources["test"].endswith("gsm8k_test.jsonl")


def test_a_packaged_file_that_is_missing_is_not_installed():
    spec = DataSpec("x", hub_id="x/x", packaged=(("the pkg's file", lambda: "/nonexistent/x.jsonl.gz"),))
    with pytest.raises(DataNotFoundError, match="the pkg's file: not installed"):
        locate_records(spec, "test", allow_download=False)
