r"""The value of a closed-form LaTeX number: `\frac{\sqrt{2}}{2}`, `2\sqrt{2}`, `10^{3}`, `\pi/3`.

`latex_value(s)` reads a normalised MATH answer (as `extract.normalize_math` writes it: no spaces,
braced `\frac{a}{b}` / `\sqrt{x}`) as arithmetic over numbers, `\frac`, `\sqrt` (and `\sqrt[n]`),
`\pi`, `+ - * / ^`, `\cdot`, `\times`, parentheses and implicit products. The value is exact (a
`Fraction`) while it stays rational — `\sqrt{4}` is 2, `2^{-2}` is 1/4 — and a float once an
irrational enters. Anything else (a variable, a function, `\infty`, a negative square root)
gives None: such answers are compared as strings only.

`values_equal` compares two values: rationals exactly; otherwise to a relative 1e-12 (a float
carries rounding), except that an irrational never equals an answer written with a decimal point
or a rational with a denominator above 10^6 (`1.414` approximates `\sqrt{2}`; it is not it). An
integer followed by a fraction of integers is a mixed number (`137\frac{1}{2}` is 137.5), as MATH
writes them. Exact powers stay below 4096 bits (nested powers are refused, not computed). Without
symbolic algebra, an irrational within a relative 1e-12 of a rational still equals it
(`\sqrt{10^{20}+1}` and `10^{10}`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

_TOKEN = re.compile(r"\d+\.\d*|\.\d+|\d+|\\[a-zA-Z]+|[-+*/^(){}\[\]]|.")
_MAX_EXPONENT = 64  # an exact power beyond this is not an answer anyone writes; refuse it
_MAX_BITS = 4096  # nor an exact power whose numerator or denominator passes this size
_MAX_DENOMINATOR = 10**6  # a rational equal to an irrational-looking value: a small denominator only


@dataclass(frozen=True)
class LatexValue:
    """A number read from LaTeX: `value` (Fraction when exact), and whether a decimal point
    was written (`decimal`)."""

    value: Fraction | float
    decimal: bool

    @property
    def exact(self) -> bool:
        return isinstance(self.value, Fraction)


class _Unreadable(Exception):
    pass


def latex_value(s: str) -> LatexValue | None:
    """The value of `s` as closed-form arithmetic, or None when it is not (see the module)."""
    if not s or len(s) > 200:
        return None
    tokens = _TOKEN.findall(s)
    parser = _Parser(tokens)
    try:
        value = parser.expression()
        if parser.pos != len(tokens):
            return None
    except (_Unreadable, ZeroDivisionError, OverflowError, ValueError):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return LatexValue(value, parser.decimal)


def values_equal(a: LatexValue, b: LatexValue) -> bool:
    """True iff the two values are the same number (see the module for the rule)."""
    if a.exact and b.exact:
        return a.value == b.value
    if (a.exact and a.decimal) or (b.exact and b.decimal):
        return False  # a decimal approximation of an irrational
    exact = a.value if a.exact else b.value if b.exact else None
    if exact is not None and exact.denominator > _MAX_DENOMINATOR:
        return False  # `\frac{14142135623}{10^{10}}` approximates `\sqrt{2}`; it is not it
    try:
        return math.isclose(float(a.value), float(b.value), rel_tol=1e-12, abs_tol=1e-15)
    except OverflowError:  # an exact value past the float range: not an irrational's
        return False


_STARTS_ATOM = ("(", "{", "\\frac", "\\sqrt", "\\pi")


class _Parser:
    """Recursive descent over the tokens; `pos` is the next token."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.decimal = tokens, 0, False

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        tok = self._peek()
        if tok is None or (expected is not None and tok != expected):
            raise _Unreadable
        self.pos += 1
        return tok

    def _one_digit(self) -> bool:
        """Split a number token after its first digit (a LaTeX argument without braces is one
        character); True when the next token is a digit."""
        tok = self._peek()
        if tok is None or not tok[0].isdigit():
            return False
        if len(tok) > 1:
            self.tokens[self.pos:self.pos + 1] = [tok[0], tok[1:]]
        return True

    def expression(self):
        value = self._term()
        while self._peek() in ("+", "-"):
            op = self._take()
            rhs = self._term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def _term(self):
        value = self._mixed_number()
        if value is None:
            value = self._unary()
        while True:
            tok = self._peek()
            if tok in ("*", "\\cdot", "\\times", "/", "\\div"):
                self._take()
                rhs = self._unary()
                value = _divide(value, rhs) if tok in ("/", "\\div") else value * rhs
            elif tok is not None and (tok in _STARTS_ATOM or tok[0].isdigit() or tok[0] == "."):
                value = value * self._power()  # implicit product: 2\sqrt{2}, 3\pi, 2(1+x)
            else:
                return value

    def _mixed_number(self) -> Fraction | None:
        r"""`137\frac{1}{2}` or `-1\frac12` at the start of a term: a mixed number (137 + 1/2, as
        MATH writes them), not a product; None (nothing read) for anything else."""
        t, i = self.tokens, self.pos
        negative = i < len(t) and t[i] == "-"
        j = i + negative
        if not (j + 2 < len(t) and t[j].isdigit() and t[j + 1] == "\\frac"):
            return None
        k = j + 2
        if t[k:k + 6:3] == ["{", "{"] and t[k + 2:k + 6:3] == ["}", "}"] and t[k + 1].isdigit() \
                and t[k + 4].isdigit():
            num, den, end = t[k + 1], t[k + 4], k + 6
        elif len(t[k]) == 2 and t[k].isdigit():  # `\frac12`
            num, den, end = t[k][0], t[k][1], k + 1
        else:
            return None
        if int(den) == 0:
            raise _Unreadable
        self.pos = end
        value = int(t[j]) + Fraction(int(num), int(den))
        return -value if negative else value

    def _unary(self):
        if self._peek() in ("-", "+"):
            sign = -1 if self._take() == "-" else 1
            return sign * self._unary()
        return self._power()

    def _power(self):
        base = self._atom()
        if self._peek() != "^":
            return base
        self._take("^")
        tok = self._peek()
        self._one_digit()  # `2^34` is 2^3 · 4 in LaTeX
        exponent = self._unary() if tok == "-" else self._atom()
        return _power(base, exponent)

    def _atom(self):
        tok = self._take()
        if tok[0].isdigit() or tok[0] == ".":
            if "." in tok:
                self.decimal = True
            return Fraction(tok)
        if tok in ("(", "{"):
            value = self.expression()
            self._take(")" if tok == "(" else "}")
            return value
        if tok == "\\frac":
            return _divide(self._group(), self._group())
        if tok == "\\sqrt":
            index = Fraction(2)
            if self._peek() == "[":
                self._take("[")
                index = self.expression()
                self._take("]")
            return _root(self._group(), index)
        if tok == "\\pi":
            return math.pi
        raise _Unreadable

    def _group(self):
        if self._one_digit():  # `\frac32`: one digit is the argument
            return self._atom()
        self._take("{")
        value = self.expression()
        self._take("}")
        return value


def _divide(a, b):
    if b == 0:
        raise _Unreadable
    return a / b


def _power(base, exponent):
    if isinstance(exponent, Fraction) and exponent.denominator == 1:
        if abs(exponent) > _MAX_EXPONENT or (base == 0 and exponent < 0):
            raise _Unreadable
        if isinstance(base, Fraction) and \
                max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(int(exponent)) > _MAX_BITS:
            raise _Unreadable  # nested powers (`{{10^{64}}^{64}}^{64}`) would take minutes and gigabytes
        return base ** int(exponent)
    if isinstance(exponent, Fraction) and isinstance(base, Fraction) and base > 0 \
            and abs(exponent.numerator) <= _MAX_EXPONENT:
        return _root(base ** exponent.numerator, Fraction(exponent.denominator))
    if base < 0:
        raise _Unreadable  # a complex number
    return float(base) ** float(exponent)


def _root(x, index):
    if not (isinstance(index, Fraction) and index.denominator == 1 and 2 <= index <= _MAX_EXPONENT):
        raise _Unreadable
    n = int(index)
    if x < 0:
        if n % 2 == 0:
            raise _Unreadable  # a complex number
        return -_root(-x, index)
    if isinstance(x, Fraction):
        num, den = _int_root(x.numerator, n), _int_root(x.denominator, n)
        if num is not None and den is not None:
            return Fraction(num, den)
    return float(x) ** (1.0 / n)


def _int_root(k: int, n: int) -> int | None:
    """The integer r with r**n == k, or None."""
    r = round(k ** (1.0 / n)) if k < 2**1000 else None
    if r is None:
        return None
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**n == k:
            return c
    return None
