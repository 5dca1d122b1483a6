r"""`math_equal`: whether two MATH answers agree, once normalised (`extract.normalize_math`).

Two answers are equal when the normalised strings are, when both are exact rationals of equal
value, when both are closed-form numbers of equal value (`latex_value`: `\sqrt{2}/2` is
`\frac{\sqrt{2}}{2}`, `2\sqrt{2}` is `\sqrt{8}`; a decimal approximation is not an irrational),
or element by element: tuples and intervals in order with the same brackets, sets `\{..\}` and
bare comma lists ("all solutions") in any order, each element's own `x =` dropped. One `\pm` is
the set of its two branches: `\pm 2` is `2, -2` and `\frac{1\pm\sqrt5}{2}` lists both roots.
"""

from __future__ import annotations

import re
from fractions import Fraction

from depmask.tasks.benchmarks.extract import ANSWER_NAME, normalize_math
from depmask.tasks.benchmarks.latex_value import latex_value, values_equal


def _as_rational(s: str) -> Fraction | None:
    r"""An exact rational for an integer, decimal, `a/b` or `\frac{a}{b}` (optionally signed)."""
    t = s.replace(" ", "")
    sign = 1
    if t.startswith("-"):
        sign, t = -1, t[1:]
    m = re.fullmatch(r"\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", t) or re.fullmatch(
        r"(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)", t)
    try:
        if m:
            den = Fraction(m.group(2))
            return None if den == 0 else sign * Fraction(m.group(1)) / den
        if re.fullmatch(r"\d*\.?\d+", t):
            return sign * Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def math_equal(prediction: str | None, reference: str) -> bool:
    """True iff the two MATH answers agree after normalisation, or as exact rationals."""
    if prediction is None:
        return False
    return _same_answer(normalize_math(prediction), normalize_math(reference))


def _same_answer(a: str, b: str, depth: int = 0) -> bool:
    """Normalised answers `a` and `b` agree: as strings, as rationals, as closed-form values, or
    element by element (tuples and intervals in order with the same brackets; sets and bare
    comma lists in any order)."""
    if a == b:
        return True
    ra, rb = _as_rational(a), _as_rational(b)
    if ra is not None and ra == rb:
        return True
    va, vb = latex_value(a), latex_value(b)
    if va is not None and vb is not None:
        return values_equal(va, vb)
    ea, eb = _elements(a), _elements(b)
    if ea is None or eb is None or depth > 4 or ea[0] != eb[0] or len(ea[1]) != len(eb[1]):
        return False
    (brackets, xs), (_, ys) = ea, eb
    if brackets != "set":
        return all(_same_answer(x, y, depth + 1) for x, y in zip(xs, ys))
    unused = list(ys)
    for x in xs:
        match = next((i for i, y in enumerate(unused) if _same_answer(x, y, depth + 1)), None)
        if match is None:
            return False
        unused.pop(match)
    return True


def _elements(s: str) -> tuple[str, list[str]] | None:
    r"""A normalised answer's elements: (`"(]"`-style brackets, or `"set"` for `\{..\}`, a bare
    comma list and one `\pm`'s two branches; the parts), or None for a single answer."""
    branches = _plus_minus_branches(s)
    if branches is not None:
        return "set", branches
    if s.startswith("\\{") and s.endswith("\\}") and _top_level_split(s[2:-2]) is not None:
        return "set", _top_level_split(s[2:-2]) or []
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = _top_level_split(s[1:-1])
        if inner is not None:
            return s[0] + s[-1], inner
    parts = _top_level_split(s)
    if parts is None or len(parts) < 2:
        return None
    # `x=1,x=-2`: each element's own `name =`
    return "set", [p.split("=", 1)[1] if p.count("=") == 1 and ANSWER_NAME.fullmatch(p.split("=")[0]) else p
                   for p in parts]


def _plus_minus_branches(s: str) -> list[str] | None:
    r"""`a\pm b` as `[a+b, a-b]` (a unary `\pm b` as `[b, -b]`); None unless `s` holds exactly one
    `\pm` (not `\pmod` or `\pmb`) and no `\mp`. Normalised answers have no spaces: `\pm x` is `\pmx`."""
    signs = list(re.finditer(r"\\pm(?!od|b\{)", s))
    if len(signs) != 1 or "\\mp" in s:
        return None
    head, tail = s[:signs[0].start()], s[signs[0].end():]
    unary = not head or head[-1] in "{([,="
    return [head + ("" if unary else "+") + tail, head + "-" + tail]


def _top_level_split(s: str) -> list[str] | None:
    """`s` split at commas outside brackets and braces; None when its brackets do not balance
    (`1),(2` is not one bracketed answer)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    if depth != 0:
        return None
    return parts + [s[start:]]
