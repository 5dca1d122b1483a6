"""Prompt texts, record fields and answer-extraction corners of the text benchmarks that a
one-line slip in the code would change without any other test noticing (each test here failed on
such a mutant): the exact shape of GSM8K / MATH-500 / MBPP / HumanEval prompts (exemplar order,
separators, stripping, chat requests), what a record keeps, and some GSM8K / MATH extraction and
normalisation rules."""

from __future__ import annotations

import pytest

from depmask.tasks import Example
from depmask.tasks.benchmarks import (
    GSM8K,
    MBPP,
    HumanEval,
    Math500,
    extract_gsm8k,
    extract_math,
    last_boxed,
    normalize_math,
    truncate_at,
)
from depmask.tasks.benchmarks.gsm8k import COT_EXEMPLARS
from depmask.tasks.benchmarks.gsm8k import ZERO_SHOT_INSTRUCTION as GSM8K_ZERO_SHOT
from depmask.tasks.benchmarks.humaneval import CHAT_INSTRUCTION as HUMANEVAL_CHAT
from depmask.tasks.benchmarks.math500 import MINERVA_EXEMPLARS
from depmask.tasks.benchmarks.mbpp import CHAT_INSTRUCTION as MBPP_CHAT
from tests.tasks.benchmark_rows import ENV_VARS, GSM8K_ROWS, HUMANEVAL_ROWS, _jsonl


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


# ---- generic ---------------------------------------------------------------------------------


def test_truncate_at_ignores_an_empty_stop_string():
    # "" occurs everywhere: taken as a stop it would cut every completion to nothing
    assert truncate_at("abc", [""]) == "abc"
    assert truncate_at("abc", ["", "c"]) == "ab"


# ---- GSM8K -----------------------------------------------------------------------------------


def test_gsm8k_few_shot_prompt_is_the_first_k_exemplars_in_order():
    ex = Example("gsm8k:test:0", "gsm8k", "  How many?\n", "1")
    (q1, c1, _), (q2, c2, _) = COT_EXEMPLARS[:2]
    assert q1.startswith("There are 15 trees") and q2.startswith("If there are 3 cars")
    expected = (f"Question: {q1}\nAnswer: {c1} The answer is 6.\n\n"
                f"Question: {q2}\nAnswer: {c2} The answer is 5.\n\n"
                "Question: How many?\nAnswer:")
    assert GSM8K(shots=2).prompt_text(ex) == expected
    assert GSM8K(shots=0).prompt_text(ex) == f"How many?\n{GSM8K_ZERO_SHOT}"


def test_gsm8k_example_keeps_the_worked_solution_and_a_canonical_reference(tmp_path):
    rows = [*GSM8K_ROWS[:3], {"question": "How much?", "answer": "It costs 1,234.\n#### $1,234."}]
    bench = GSM8K(path=_jsonl(tmp_path / "test.jsonl", rows))
    ex = bench.examples()[2]
    assert ex.id == "gsm8k:test:2" and ex.answer == "4"
    assert ex.meta == {"solution": "2 + 2 = 4\n#### 4", "index": 2}
    assert bench.examples()[3].answer == "1234"  # the number, not the text after `####`


def test_gsm8k_answer_is_marker_is_case_blind_and_the_last_equation_counts():
    assert extract_gsm8k("Answer: 18. Check: 3 more apples") == "18"  # capitalised `Answer:`
    assert extract_gsm8k("ANSWER IS 7, from 2 boxes") == "7"
    # a corrected equation: the clause of the last "the answer is", not of the first
    assert extract_gsm8k("The answer is 2 + 3 = 5. Wait, the answer is 4 + 2 = 6.") == "6"


def test_gsm8k_hash_marker_does_not_reach_past_the_end_of_its_line():
    # the number must follow `####` on its line, or stand alone on the next one; a sentence on
    # the next line is not the marked answer (its first number 3 would be read)
    assert extract_gsm8k("####\n3 apples at 6 each is 18.") == "18"
    assert extract_gsm8k("####\n18\n") == "18"


def test_gsm8k_boxed_negative_amount_in_escaped_dollars():
    # `-\$5`: the `\$` must not split the sign from the number
    assert extract_gsm8k(r"She loses \boxed{-\$5}") == "-5"
    assert extract_gsm8k(r"\boxed{12\%}") == "12"


# ---- MATH-500 --------------------------------------------------------------------------------


def test_math500_few_shot_prompt_is_the_first_k_minerva_exemplars_in_order():
    ex = Example("math500:test:0", "math500", " What is 2+2?\n", "4")
    (p1, s1), (p2, s2) = MINERVA_EXEMPLARS[:2]
    assert p1.startswith("Find the domain") and p2.startswith(r"If $\det \mathbf{A} = 2$")
    expected = (f"Problem:\n{p1}\n\nSolution:\n{s1}\n\n"
                f"Problem:\n{p2}\n\nSolution:\n{s2}\n\n"
                "Problem:\nWhat is 2+2?\n\nSolution:")
    assert Math500(shots=2).prompt_text(ex) == expected
    assert Math500(shots=0).prompt_text(ex).startswith("What is 2+2?\nPlease reason step by step")


def test_math500_records_keep_their_fields_and_grade_reports_normalised_answers(tmp_path):
    rows = [{"problem": "P", "solution": r"$\boxed{\frac12}$", "answer": r"\dfrac{1}{2}", "subject": "Algebra",
             "level": 2, "unique_id": "test/algebra/7.json"},
            {"problem": "Q", "solution": r"So $\boxed{3}$.", "answer": None}]  # null answer: the box
    bench = Math500(path=_jsonl(tmp_path / "test.jsonl", rows))
    first, second = bench.examples()
    assert first.id == "math500:test/algebra/7.json" and first.answer == r"\dfrac{1}{2}"
    assert first.meta == {"subject": "Algebra", "level": 2, "unique_id": "test/algebra/7.json",
                          "solution": r"$\boxed{\frac12}$", "index": 0}
    assert second.id == "math500:test:1" and second.answer == "3"
    grade = bench.grade_one(first, r"So $\boxed{\tfrac{1}{2}}$.")
    # the grade shows both answers normalised, not the raw `\tfrac`
    assert grade.correct and grade.prediction == grade.reference == r"\frac{1}{2}"


def test_math_extraction_takes_the_last_answer_is_and_unwraps_every_dollar_pair():
    assert extract_math("The answer is 5.\nWait, I slipped: the answer is 7.") == "7"
    assert extract_math("Final Answer: The final answer is $$24$$. I hope it is correct.") == "24"
    # an escaped `\.` is not the sentence's end
    assert extract_math(r"the answer is $1\. 5$") == r"1\. 5"


def test_an_empty_space_form_box_is_no_answer():
    assert last_boxed(r"so the result is $\boxed $") is None
    ex = Example("math500:test:0", "math500", "q", "4")
    grade = Math500(shots=0).grade_one(ex, r"so the result is $\boxed $")
    assert grade.status == "no_answer" and grade.prediction is None


@pytest.mark.parametrize("answer, expected", [
    (r"5\text{ Inches}", "5"),            # unit words in any case
    (r"12\text{ sq. units}", "12"),       # an abbreviation's period
    (r"x \in [2, 5]", "[2,5]"),
    (r"x \infty", r"x\infty"),             # `\infty` is not the `\in` prefix
])
def test_math_normalisation_details(answer, expected):
    assert normalize_math(answer) == expected


# ---- MBPP ------------------------------------------------------------------------------------


def _mbpp_rows():
    # code with trailing blank lines and a description with padding, as real records have
    return [{"task_id": tid, "text": f"  Write f{tid}.  ", "code": f"def f{tid}():\n    return {tid}\n\n",
             "test_list": [f"assert f{tid}() == {tid}", f"assert f{tid}() != -1"], "test_setup_code": ""}
            for tid in (1, 2, 3, 4, 11)]


def _mbpp_problem(tid: int) -> str:
    return (f"You are an expert Python programmer, and here is your task: Write f{tid}. "
            f"Your code should pass these tests:\n\nassert f{tid}() == {tid}\nassert f{tid}() != -1\n")


def test_mbpp_few_shot_prompt_text_exactly(tmp_path):
    bench = MBPP(path=_jsonl(tmp_path / "mbpp.jsonl", _mbpp_rows()), shots=1)
    target = bench.examples("test")[0]
    assert target.prompt == "Write f11."
    expected = (f"{_mbpp_problem(2)}[BEGIN]\ndef f2():\n    return 2\n[DONE]\n\n"
                f"{_mbpp_problem(11)}[BEGIN]\n")
    assert bench.prompt_text(target) == expected


def test_mbpp_chat_prompt_asks_for_a_code_block_on_its_own_line(tmp_path):
    bench = MBPP(path=_jsonl(tmp_path / "mbpp.jsonl", _mbpp_rows()), shots=0)
    target = bench.examples("test")[0]
    (user,) = bench.messages(target)
    assert user == {"role": "user", "content": f"{_mbpp_problem(11)}\n{MBPP_CHAT}"}


def test_mbpp_sanitized_records_read_prompt_and_test_imports(tmp_path):
    rows = [{"task_id": 11, "prompt": " Write f. ", "code": "def f():\n    return math.pi",
             "test_list": ["assert f() > 3"], "test_imports": ["import math", "import os"]}]
    (ex,) = MBPP(path=_jsonl(tmp_path / "mbpp.jsonl", rows), shots=0).examples("test")
    assert ex.prompt == "Write f." and ex.meta["test_setup_code"] == "import math\nimport os"
    # the original field wins over the sanitized one when a record has both
    both = [{**rows[0], "text": "Original text."}]
    (ex,) = MBPP(path=_jsonl(tmp_path / "both.jsonl", both), shots=0).examples("test")
    assert ex.prompt == "Original text."


# ---- HumanEval -------------------------------------------------------------------------------


def test_humaneval_chat_prompt_fences_the_prompt_without_its_trailing_newline(tmp_path):
    bench = HumanEval(path=_jsonl(tmp_path / "he.jsonl", HUMANEVAL_ROWS))
    (ex,) = bench.examples()
    (user,) = bench.messages(ex)
    assert user["content"] == f'{HUMANEVAL_CHAT}\n\n```python\ndef f():\n    """one"""\n```'
    # plain: the raw prompt, its final newline kept (the model continues with the body)
    assert bench.prompt_text(ex) == 'def f():\n    """one"""\n'
    assert ex.answer == "    return 1\n"
    assert bench.program(ex, "    return 1\n").endswith("def check(c):\n    assert c() == 1\n\n\ncheck(f)\n")
