"""`latex_value`: closed-form LaTeX numbers, exact while rational."""

import math
from fractions import Fraction

import pytest

from depmask.tasks.benchmarks.latex_value import LatexValue, latex_value, values_equal


@pytest.mark.parametrize("text, value", [
    ("3", Fraction(3)),
    ("-2.5", Fraction(-5, 2)),
    (r"\frac{3}{4}", Fraction(3, 4)),
    (r"\frac{\frac{1}{2}}{3}", Fraction(1, 6)),
    (r"\sqrt{4}", Fraction(2)),
    (r"\sqrt{\frac{9}{16}}", Fraction(3, 4)),
    (r"\sqrt[3]{-8}", Fraction(-2)),
    ("2^{-2}", Fraction(1, 4)),
    ("2^34", Fraction(32)),                 # `^` takes one digit, as LaTeX does
    (r"4^{\frac{1}{2}}", Fraction(2)),
    ("2(3+4)", Fraction(14)),
    (r"3\cdot4-1", Fraction(11)),
    (r"6\div4", Fraction(3, 2)),
    ("-(1-3)^2", Fraction(-4)),
    # an integer then a fraction of integers is a mixed number, as MATH writes them (MATH-500 has
    # `137\frac{1}{2}`): it was read as a product (68.5)
    (r"137\frac{1}{2}", Fraction(275, 2)),
    (r"-1\frac12", Fraction(-3, 2)),
    (r"2+1\frac{3}{5}", Fraction(18, 5)),
])
def test_rational_values_are_exact(text, value):
    got = latex_value(text)
    assert got is not None and got.exact and got.value == value


@pytest.mark.parametrize("text, value", [
    (r"\sqrt{2}", math.sqrt(2)),
    (r"2\sqrt{2}", 2 * math.sqrt(2)),
    (r"\frac{\pi}{3}", math.pi / 3),
    (r"3\pi", 3 * math.pi),
    (r"\sqrt[3]{2}", 2 ** (1 / 3)),
    (r"2^{\frac{1}{2}}", math.sqrt(2)),
])
def test_irrational_values_are_floats(text, value):
    got = latex_value(text)
    assert got is not None and not got.exact and got.value == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", [
    "", "x", "2x", r"\infty", r"\sqrt{-4}", r"\frac{1}{0}", "0^{-1}", "(-8)^{\\frac13}", "2^{1000}",
    "(1,2)", "1+", "(1", r"\frac{1}", r"\sqrt[2.5]{3}", "e^{2}", r"\text{5}",
    # nested powers: refused at once (10^(64^5) took minutes and gigabytes)
    "{{{{10^{64}}^{64}}^{64}}^{64}}^{64}", "(10^{64})^{64}", r"1\frac{1}{0}",
])
def test_unreadable_answers_give_none(text):
    assert latex_value(text) is None


def test_equality_rules():
    exact = latex_value("2")
    assert values_equal(exact, latex_value(r"\sqrt{2}\cdot\sqrt{2}"))   # float rounding tolerated
    assert values_equal(latex_value(r"\sqrt{8}"), latex_value(r"2\sqrt{2}"))
    assert not values_equal(latex_value("1.4142135623730951"), latex_value(r"\sqrt{2}"))
    assert not values_equal(latex_value("0.333333333333"), latex_value(r"\frac{1}{3}"))
    assert values_equal(latex_value("0.25"), latex_value(r"\frac{1}{4}"))
    assert latex_value("1.5").decimal and not latex_value(r"\frac32").decimal
    assert LatexValue(Fraction(1), False).exact
    # a rational with a large denominator approximates an irrational; it is not it
    assert not values_equal(latex_value(r"\frac{14142135623}{10000000000}"), latex_value(r"\sqrt{2}"))
    # an exact value past the float range against an irrational: not equal (it raised OverflowError)
    assert not values_equal(LatexValue(Fraction(10) ** 400, False), latex_value(r"\sqrt{2}"))
