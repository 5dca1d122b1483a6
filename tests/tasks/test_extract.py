"""Answer extraction on hand-written completions: GSM8K numbers, MATH boxed answers and their
normalisation (code completions: `test_extract_code.py`)."""

from __future__ import annotations

import pytest

from depmask.tasks import Example
from depmask.tasks.benchmarks import (
    GSM8K,
    Math500,
    extract_gsm8k,
    extract_math,
    last_boxed,
    math_equal,
    normalize_math,
    normalize_number,
    numbers_equal,
    truncate_at,
)
from depmask.tasks.benchmarks.extract import gsm8k_reference

# ---- GSM8K -----------------------------------------------------------------------------------


@pytest.mark.parametrize("completion, expected", [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("#### 1,234", "1234"),
    ("The answer is $1,234.", "1234"),
    ("So the total is 72.", "72"),                        # trailing period
    ("The answer is 18 dollars.", "18"),
    ("He ends up with -5 degrees.", "-5"),               # negative
    ("The temperature drops to −3.", "-3"),               # Unicode minus
    ("It costs $2.50 per pound, so 2.50.", "2.5"),       # decimals, trailing zeros
    ("#### 72.00", "72"),
    ("She has 5 - 3 = 2 apples left", "2"),              # subtraction is not a negative sign
    ("Total: \\boxed{1,000} cookies. Later 7 more.", "1000"),  # boxed beats the last number
    ("Then 3 + 4 = 7. The answer is: 7\nNote: 10 boxes were used.", "7"),  # 'answer is' beats last number
    ("#### 42\n\nQuestion: Tom has 3 apples", "42"),      # the first #### wins
    ("The answer is .5", "0.5"),
    ("50% of them, i.e. 12 people", "12"),
    ("no number here", None),
    ("", None),
    # a boxed fraction is its value, not the 4 inside it (which graded 3/4 right for 4)
    ("She eats 3 of the 4 slices, so the fraction is \\boxed{\\frac{3}{4}}", "0.75"),
    ("\\boxed{\\dfrac{10}{2}} slices", "5"),
    ("There are 4 cats and the answer is \\boxed{x}", None),  # a box without a number is no answer
    ("Total 18. \\boxed{\\text{18}}", "18"),  # a number in a font macro is still the number
    ("\\boxed{\\textbf{18}}", "18"),
    ("\\boxed{\\mathbf{-3}}", "-3"),
    ("\\boxed{18 \\text{ dollars}}", "18"),
    # a numbered markdown heading after `####` is not the marker
    ("#### 1. Cost of the apples\n3 * 6 = 18\n#### 2. Total\n18 + 2 = 20\n\nThe answer is \\boxed{20}.", "20"),
    ("#### 1) Apples\n3*6=18\n\\boxed{20}", "20"),
    # "the answer is" an equation: what follows its last `=`
    ("The answer is 20 - 2 = 18.", "18"),
    ("So the answer is: $5 + $13 = $18.", "18"),
    ("The answer is -18 + 20 = 2", "2"),
    ("The answer is 18. Later I note 2019.", "18"),
    # the last "the answer is" is the final one (a model that corrects itself)
    ("The answer is 5.\nWait, I made an error. The answer is 7.", "7"),
    # an equation chain: what follows its last `=`, not its first
    ("The answer is 2 * 3 = 6 + 1 = 7.", "7"),
    # no number in the clause: the first number after the phrase, not the text's last number
    ("The answer is as follows. She has 18 apples in 3 bags", "18"),
])
def test_extract_gsm8k(completion, expected):
    assert extract_gsm8k(completion) == expected


@pytest.mark.parametrize("completion, expected", [
    # a markdown heading `#### Step 1` is not the answer marker (its 1 was taken as the answer)
    ("#### Step 1: boxes\n3 * 6 = 18\n#### Step 2: total\n18 + 2 = 20\n\nThe answer is \\boxed{20}.", "20"),
    ("#### Final answer\nSo 4 + 5 = 9", "9"),
    ("#### Step 1: add\n4 + 5 = 9\n#### 9\n#### 10", "9"),  # the first #### followed by a number
    ("#### $1,234", "1234"),
    ("#### -5", "-5"),
    ("#### −3", "-3"),
    # bold, or on the next line: still the marker (the first version of this rule missed both)
    ("#### **18**\nShe earns 18 per day over 2 days.", "18"),
    ("####\n18\nThat is 2 more than 16.", "18"),
    # but not a bold numbered heading or a numbered list after the marker (its 1 was taken)
    ("#### **1. Cost of the apples**\n3 * 6 = 18\n#### 18", "18"),
    ("####\n1. She buys 3 apples at 6 each.\nThe answer is 18.", "18"),
])
def test_gsm8k_hash_marker_counts_only_when_a_number_follows(completion, expected):
    assert extract_gsm8k(completion) == expected


def test_gsm8k_numbers_compare_by_value_and_reference_parses():
    assert numbers_equal("72.00", "72") and numbers_equal("$1,000", "1000") and numbers_equal("-3.", "-3")
    assert not numbers_equal("72", "72.5") and not numbers_equal(None, "1") and not numbers_equal("abc", "1")
    assert normalize_number("0007") == "7" and normalize_number("1e3") == "1000"
    assert normalize_number("inf") is None and normalize_number("x") is None
    assert gsm8k_reference("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 1,018") == "1018"
    with pytest.raises(ValueError, match="####"):
        gsm8k_reference("no marker here")


def test_gsm8k_grade_uses_stop_strings():
    bench = GSM8K(shots=2)  # the exemplar stop `Question:` belongs to the few-shot prompt only
    ex = Example("gsm8k:test:0", "gsm8k", "q", "18")
    assert bench.grade_one(ex, "9 * 2 = 18. The answer is 18.\n\nQuestion: x? Answer: 99").correct
    assert not bench.grade_one(ex, "The answer is 17.").correct
    assert bench.grade_one(ex, "I do not know").status == "no_answer"
    assert bench.score(ex, "so #### 18<|endoftext|> 99 99")


# ---- MATH ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (r"so $\boxed{5}$.", "5"),
    (r"first \boxed{1} then \boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # last one, nested
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),                                         # escaped braces
    (r"the answer is $\boxed 7$", "7"),                                         # space form
    (r"\fbox{x^{2}}", "x^{2}"),
    (r"\boxed{unclosed", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("completion, expected", [
    (r"Thus $x = \boxed{\dfrac{1}{2}}$.", r"\dfrac{1}{2}"),
    ("Final Answer: The final answer is $[2,5)$. I hope it is correct.", "[2,5)"),
    ("so the answer is $-3$.", "-3"),
    # a number ends its sentence too (it used to run on: `12.Thismatchesthecheckabove`)
    ("Adding them up, the answer is 12. This matches the check above.", "12"),
    ("So the answer is 0.5. Done.", "0.5"),
    ("nothing here", None),
])
def test_extract_math(completion, expected):
    assert extract_math(completion) == expected


@pytest.mark.parametrize("raw, normal", [
    (r"\frac12", r"\frac{1}{2}"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\tfrac 3 4", r"\frac{3}{4}"),
    ("1/2", r"\frac{1}{2}"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    (r"10\!000", "10000"),
    (r"5 \text{ cm}^2", "5"),
    (r"12\mbox{ inches}", "12"),
    ("12 inches", "12"),
    (r"30^\circ", "30"),
    (r"30^{\circ}", "30"),
    (r"50\%", "50"),
    (r"\$5.", "5"),
    ("x = 5", "5"),
    ("5.0", "5"),
    ("2.50", "2.5"),
    ("007", "7"),
    ("1,000", "1000"),
    (r"\sqrt3", r"\sqrt{3}"),
    (r"\text{(A)}", "A"),                  # a choice is its letter
    (r"\text{Monday}", "Monday"),
    (r"\displaystyle \frac{a}2", r"\frac{a}{2}"),
    ("(1, 2)", "(1,2)"),                 # tuple commas are not thousands separators
    ("[2,5)", "[2,5)"),
])
def test_normalize_math(raw, normal):
    assert normalize_math(raw) == normal


@pytest.mark.parametrize("prediction, reference, equal", [
    ("0.5", r"\frac{1}{2}", True),          # numeric equality
    (r"-\dfrac23", "-2/3", True),
    (r"\frac{2}{4}", r"\frac12", True),
    ("7.00", "7", True),
    (r"90^\circ", "90", True),
    (r"4 \text{ units}", "4", True),
    (r"\left[ 2, 5 \right)", "[2,5)", True),
    (r"x=\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}", True),
    ("0.33", r"\frac{1}{3}", False),          # no rounding tolerance
    ("3", "4", False),
    (r"\frac{1}{0}", "1", False),
    (None, "1", False),
])
def test_math_equal(prediction, reference, equal):
    assert math_equal(prediction, reference) is equal


def test_math500_grade():
    # few-shot: the completion is cut where the model starts the next exemplar, `Problem:` at a
    # line start (a mid-line `Problem:` used to cut too, and at any `shots`: see the test below)
    bench = Math500(shots=4)
    ex = Example("math500:test/x.json", "math500", "p", r"\frac{2}{3}")
    good = bench.grade_one(ex, "We get $\\boxed{\\dfrac{2}{3}}$.\n\nProblem:\nnext \\boxed{9}")
    assert good.correct and good.prediction == r"\frac{2}{3}"
    assert not bench.grade_one(ex, r"$\boxed{0.67}$").correct
    assert bench.grade_one(ex, "no idea").status == "no_answer"


def test_exemplar_stops_apply_only_few_shot_and_only_at_a_line_start():
    """Zero-shot prompts show no exemplar, so `Question:` / `Problem:` in a completion is the
    model's own text (a heading, a restatement), not the start of the next exemplar: it used to
    cut the completion before its answer (`no_answer`)."""
    gsm = Example("gsm8k:test:0", "gsm8k", "q", "20")
    restated = r"**Restating the Question:** 3 boxes of 6 is 18, plus 2 is 20. \boxed{20}"
    assert GSM8K(shots=0).grade_one(gsm, restated).correct
    assert GSM8K(shots=0).grade_one(gsm, "So 20.\nQuestion: what about 99?\nThe answer is 20.").correct
    assert GSM8K(shots=2).grade_one(gsm, restated).correct  # mid-line: the model's own words
    assert GSM8K(shots=2).grade_one(gsm, "The answer is 20.\nQuestion: next\nAnswer: The answer is 99.").correct
    assert GSM8K(shots=2).grade_one(gsm, "Question: next\nAnswer: The answer is 20.").status == "no_answer"
    ex = Example("math500:test/x.json", "math500", "p", "5")
    heading = "## Understanding the Problem:\nWe need x with 2x = 10, so x = \\boxed{5}."
    assert Math500(shots=0).grade_one(ex, heading).correct
    assert Math500(shots=0).grade_one(ex, "x = \\boxed{5}.\n\nProblem:\nnext one").correct
    assert Math500(shots=4).grade_one(ex, heading).correct
    assert not Math500(shots=4).grade_one(ex, "Done.\nProblem:\nnext, \\boxed{5}").correct
    assert truncate_at("a\nQ: b Q: c", ["Q:"], line_start=True) == "a\n"
    assert truncate_at("Q: b", ["Q:"], line_start=True) == ""
    assert truncate_at("a Q: b", ["Q:"], line_start=True) == "a Q: b"


@pytest.mark.parametrize("prediction, reference, equal", [
    # `\\` separates rows whatever the spacing around it (the spacing rule ate `\ ` after `\\`
    # became `\`: a (12, 3) column equalled (1, 23))
    (r"\begin{pmatrix} 12 \\ 3 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 23 \end{pmatrix}", False),
    (r"\begin{pmatrix} -1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} -12 \end{pmatrix}", False),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    ("\\begin{pmatrix} -1 \\\\\n 2 \\end{pmatrix}", r"\begin{pmatrix}-1\\2\end{pmatrix}", True),
    # the LaTeX thousands separator `{,}`
    (r"10{,}000", "10000", True),
    (r"10{,}000", "10,000", True),
    (r"\$560{,}000", r"560,\!000", True),
    (r"1{,}2", "12", False),
    ("(1, 2)", "(1,2)", True),
    # a doubled backslash before a command is an escaped command, not a row separator
    (r"\\frac{1}{2}", r"\frac{1}{2}", True),
    (r"\\dfrac{3}{4}", r"\frac34", True),
    (r"\text{(A)}\\\text{(B)}", r"\text{(A)}\text{(B)}", False),
    # a row starting with a letter is a row (the first rule read `\\y` as an escaped command)
    (r"\begin{pmatrix}x\\y\end{pmatrix}", r"\begin{pmatrix} x \\ y \end{pmatrix}", True),
    (r"\\begin{pmatrix}x\\\\y\\end{pmatrix}", r"\begin{pmatrix} x \\ y \end{pmatrix}", True),  # all doubled
])
def test_math_equal_matrix_rows_and_latex_thousands(prediction, reference, equal):
    assert math_equal(prediction, reference) is equal


@pytest.mark.parametrize("prediction, reference, equal", [
    # closed-form values (these compared as different strings before)
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\frac{1}{\sqrt{3}}", r"\frac{\sqrt3}{3}", True),
    (r"\frac{\pi}{3}", r"\pi/3", True),
    ("10^{3}", "1000", True),
    (r"\sqrt[3]{27}", "3", True),                 # `_fix_sqrt` made this `\sqrt{[}3]{27}`
    (r"\frac{22}{7}", r"\pi", False),
    ("1.414", r"\sqrt{2}", False),                # an approximation is not the irrational
    (r"\pi", "3.14159265358979", False),
    ("2^34", "24", False),                          # LaTeX reads 2^3 4, i.e. 32
    # prefixes, boxes, choices, units
    ("f(x) = 3", "3", True),
    (r"x \in [2,5]", "[2,5]", True),
    (r"\boxed{2,5}", "2, 5", True),
    (r"\text{(C)}", "C", True),
    ("(C)", r"\text{(C)}", True),
    ("3/4 cup", r"\frac{3}{4}", True),
    # elements: tuples and intervals in order, sets and "all solutions" lists in any order
    (r"(-\infty, \frac12]", r"(-\infty,0.5]", True),
    (r"\left(\sqrt{2}/2, 1\right)", r"\left(\frac{\sqrt{2}}{2}, 1\right)", True),
    ("(5, 2)", "(2, 5)", False),
    ("[2,5)", "[2,5]", False),
    ("5, 2", "2, 5", True),
    (r"\{1, 2\}", "1, 2", True),
    ("1, 2, 2", "1, 1, 2", False),
    ("1, 2", "1, 2, 3", False),
    ("x^2+1", "x^2+2", False),
    # one `\pm` is the set of its two branches
    (r"\pm 2", "2, -2", True),
    (r"x = \pm 3", "-3, 3", True),
    (r"\pm x", "x, -x", True),
    (r"1\pm\sqrt{2}", r"1-\sqrt{2}, 1+\sqrt{2}", True),
    (r"\frac{1\pm\sqrt5}{2}", r"\frac{1-\sqrt{5}}{2}, \frac{1+\sqrt{5}}{2}", True),
    (r"\pm 2", "2", False),
    (r"\pm 2", "2, 2", False),
    (r"\pm 2", r"\mp 2", False),
    (r"3 \pmod{7}", "3, -3", False),
    # mixed numbers (MATH-500 answers such as `137\frac{1}{2}`) are sums, not products
    (r"\frac{275}{2}", r"137\frac{1}{2}", True),
    ("137.5", r"137 \frac{1}{2}", True),
    (r"\frac{137}{2}", r"137\frac{1}{2}", False),
    (r"\frac{3}{5}", r"1\frac{3}{5}", False),
    ("(10^{64})^{64}", r"\sqrt{2}", False),      # raised OverflowError
    ("1" * 5000, "1", False),                   # raised ValueError (int of > 4300 digits)
])
def test_math_equal_values_prefixes_and_elements(prediction, reference, equal):
    assert math_equal(prediction, reference) is equal


@pytest.mark.parametrize("prediction, reference", [
    (r"120 \text{ ways}", "120"), (r"5 \text{ students}", "5"), (r"5^{\text{th}}", "5"), (r"\text{5th}", "5"),
    ("x=1, x=-2", "-2, 1"), (r"x = 1 \text{ or } x = -2", "-2, 1"),
])
def test_math_count_nouns_ordinals_and_named_alternatives(prediction, reference):
    assert math_equal(prediction, reference)
