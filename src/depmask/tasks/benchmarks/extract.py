r"""Answer extraction and comparison for the math benchmarks.

- GSM8K: the final number of a completion — the number right after the first `####` that a
  number follows directly (`#### 18`; a heading `#### Step 1: ...` is not the marker), else the
  last `\boxed{}` (a box with no number in it is no answer: the text around it is not searched),
  else the last "the answer is ...", else the last number in the text. Commas, `$`, a trailing
  period, negative numbers, decimals and a boxed `\frac{a}{b}` (its value) are handled; numbers
  compare by value (`72.00 == 72`).
- MATH: the content of the last `\boxed{}` / `\fbox{}` (nested braces kept), else the Minerva
  "Final Answer: The final answer is X." line, else "the answer is X". Answers are normalised the
  usual way (Hendrycks' `strip_string` plus Minerva's unit/number clean-up): `\left`/`\right`,
  `\!` and spacing commands, `\dfrac`/`\tfrac`, `\frac12` → `\frac{1}{2}`, `a/b` → `\frac{a}{b}`,
  `\text{ cm}` units, degrees, `\%`, `$`, thousands separators (`1,000`, `10{,}000`), trailing
  `.0`, leading zeros, `x = ` / `f(x) = ` / `x \in` prefixes, a whole-answer `\boxed{}`, a
  choice `(C)` → `C`, and all spaces; a row separator `\\` stays one, whatever the spacing around
  it (a column (12, 3) is not (1, 23)). Normalised answers are compared by `math_compare`.

No symbolic algebra (sympy): expressions with variables compare as normalised strings only
(`x^2+2x` is not `x(x+2)`). Thousands separators inside a tuple are not recognised
(`(1,000, 2)` is a 3-tuple). This module does not tokenize or run code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

# ---- generic ---------------------------------------------------------------------------------


def truncate_at(text: str, stops: Iterable[str], line_start: bool = False) -> str:
    """`text` up to the earliest occurrence of any string in `stops` (all of it if none);
    `line_start`: only occurrences that begin a line (or the text) count."""
    cut = len(text)
    for stop in stops:
        if stop:
            i = text.find(stop)
            while line_start and i > 0 and text[i - 1] != "\n":
                i = text.find(stop, i + 1)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


# ---- numbers (GSM8K) -------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.])[-−]?\s?\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
# `#### 18`, `#### $1,234`, `#### −5`, `#### **18**` (bold: the number alone between the stars), or
# `####` then the number alone on the next line; not a markdown heading (`#### Step 1: ...`,
# `#### **1. Cost**`) or a numbered list after the marker (`####\n1. She buys ...`)
_HASH_NUMBER = r"[-−]?[ \t]?\$?[ \t]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_HASHES = re.compile(rf"####[ \t]*(?:\*\*[ \t]*({_HASH_NUMBER})[ \t]*\*\*|\n[ \t]*({_HASH_NUMBER})[ \t]*\.?[ \t]*(?=\n|$)"
                     rf"|({_HASH_NUMBER})(?![ \t]*[.)][ \t]*[A-Za-z*]))")  # not `#### 1. Cost`, `#### 1) Apples`
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)


def normalize_number(text: str) -> str | None:
    """A number as a canonical string (`"1,234.50"` → `"1234.5"`, `"-$3."` → `"-3"`), or None.

    Accepts `$`, thousands commas, a trailing `.`, `%`, the Unicode minus and surrounding spaces.
    """
    s = text.strip().replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    s = s.rstrip(".%")
    if len(s) > 1000:  # not an answer; and Python refuses int() of more than 4300 digits (a raise)
        return None
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _last_number(text: str) -> str | None:
    for match in reversed(_NUMBER.findall(text)):
        value = normalize_number(match)
        if value is not None:
            return value
    return None


def extract_gsm8k(completion: str) -> str | None:
    """The final numeric answer of a GSM8K completion as a canonical string, or None."""
    for hashes in _HASHES.finditer(completion):  # the first `####` a number follows directly
        found = normalize_number(next(g for g in hashes.groups() if g is not None))
        if found is not None:
            return found
    boxed = last_boxed(completion)
    if boxed is not None:  # the model's final answer: a fraction's value, or no answer at all (not a
        # number from elsewhere in the text, e.g. the 4 of `\boxed{\frac{3}{4}}` graded right for 4)
        unwrapped = _FONT.sub(r" \1 ", boxed)  # `\text{18}`, `\mathbf{18}`: their contents
        return _last_number(_strip_latex_number(_GSM8K_FRAC.sub(_fraction_value, unwrapped)))
    matches = list(_ANSWER_IS.finditer(completion))
    if matches:
        # its clause (to the sentence's or line's end); an equation there: what follows its last `=`
        # ("The answer is 20 - 2 = 18." took 20)
        clause = re.split(r"\n|\.(?:\s|$)", completion[matches[-1].end():], maxsplit=1)[0]
        found = _first_number(clause.rsplit("=", 1)[-1] if "=" in clause else completion[matches[-1].end():])
        if found is not None:
            return found
    return _last_number(completion)


_FONT = re.compile(r"\\(?:text|textbf|textrm|mathbf|mathrm|mbox|boldsymbol)\s*\{([^{}]*)\}")
_GSM8K_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([-−]?\d[\d,]*(?:\.\d+)?)\s*\}\s*\{\s*(\d[\d,]*(?:\.\d+)?)\s*\}")


def _fraction_value(match: re.Match) -> str:
    """`\frac{a}{b}` as the decimal of a / b (left as it was when b is 0)."""
    a, b = (Decimal(g.replace("−", "-").replace(",", "")) for g in match.groups())
    return match.group(0) if b == 0 else format((a / b).normalize(), "f")


def _first_number(text: str) -> str | None:
    for match in _NUMBER.findall(text):
        value = normalize_number(match)
        if value is not None:
            return value
    return None


def _strip_latex_number(s: str) -> str:
    return re.sub(r"\\text\{[^{}]*\}|\\[,!;: ]|\\\$|\\%", " ", s).replace("{", "").replace("}", "")


def gsm8k_reference(answer_field: str) -> str:
    """The reference number of a GSM8K `answer` field (the text after `####`)."""
    tail = answer_field.split("####")[-1]
    value = normalize_number(tail)
    if value is None:
        raise ValueError(f"GSM8K answer field has no number after '####': {answer_field[-80:]!r}")
    return value


def numbers_equal(a: str | None, b: str | None) -> bool:
    """True iff both are numbers of equal value (strings as `normalize_number` accepts)."""
    if a is None or b is None:
        return False
    na, nb = normalize_number(a), normalize_number(b)
    return na is not None and nb is not None and Decimal(na) == Decimal(nb)


# ---- boxed answers and MATH normalisation ----------------------------------------------------


def last_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}` / `\fbox{...}` (nested braces kept), or of the last
    `\boxed x` (space form, up to `$` or end of line); None if there is none or it never closes."""
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{)?", text)]
    if not starts:
        return None
    m = starts[-1]
    if m.group(1) is None:  # `\boxed 5$`
        rest = text[m.end():]
        return re.split(r"[$\n]", rest, maxsplit=1)[0].strip() or None
    depth, i = 1, m.end()
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # skip escaped braces `\{` `\}`
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[m.end():i]
        i += 1
    return None


_FINAL_ANSWER = re.compile(r"final answer is\s*(.+?)\.?\s*(?:I hope it is correct|$)", re.IGNORECASE | re.MULTILINE)


def extract_math(completion: str) -> str | None:
    r"""The raw (unnormalised) final answer of a MATH completion: the last `\boxed{}`, else the
    Minerva `Final Answer: The final answer is X.` line, else the last `the answer is X`."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    finals = _FINAL_ANSWER.findall(completion)
    if finals:
        return _strip_dollars(finals[-1])
    matches = list(_ANSWER_IS.finditer(completion))
    if matches:
        rest = completion[matches[-1].end():].strip()
        line = re.split(r"\n|(?<!\\)\.(?:\s|$)", rest, maxsplit=1)[0]  # `12. More` ends at 12
        return _strip_dollars(line) or None
    return None


def _strip_dollars(s: str) -> str:
    s = s.strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    return s


_UNIT_WORDS = (
    "units", "unit", "sq", "square", "cubic", "degrees", "degree", "cm", "mm", "km", "m", "meters",
    "meter", "inches", "inch", "feet", "foot", "ft", "yards", "yard", "miles", "mile", "hours",
    "hour", "minutes", "minute", "seconds", "second", "days", "day", "weeks", "week", "dollars",
    "dollar", "cents", "cent", "pounds", "pound", "mph", "points", "cups", "gallons", "liters",
    "ounces", "cup", "gallon", "liter", "ounce",
    # Minerva's clean-up: count nouns and ordinal suffixes (`120 \text{ ways}`, `5^{\text{th}}`)
    "ways", "integers", "digits", "students", "edges", "meals", "multiples", "gm", "th", "st", "nd", "rd",
)  # fmt: skip
_UNITS = "|".join(sorted(_UNIT_WORDS, key=len, reverse=True))
# `\text{ cm}^2`, `\mbox{inches}`, `\mathrm{m}`: group 1 the text, group 2 a power after it
_TEXT = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\s*\{\s*([^{}]*?)\s*\}(\s*\^\s*\{?\d\}?)?")
_PLAIN_UNIT = re.compile(rf"(?<=[\d}}])\s*(?:(?:{_UNITS})\b\s*)+(?:\^\s*\{{?\d\}}?)?\s*$")


def _unit_or_text(m: re.Match) -> str:
    """Drop `\text{...}` that is a unit (with its power); keep other text (`\text{(A)}` → `(A)`)."""
    words = m.group(1).lower().split()
    if words and all(w.rstrip(".") in _UNIT_WORDS for w in words):
        return ""
    return m.group(1) + (m.group(2) or "")


def _fix_fracs(s: str) -> str:
    r"""`\frac12` → `\frac{1}{2}`, `\frac1{b}` → `\frac{1}{b}`, `\frac{a}2` → `\frac{a}{2}`."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            close = _matching_brace(part, 0)
            if close is not None and close + 1 < len(part) and part[close + 1] != "{":
                part = part[: close + 1] + "{" + part[close + 1] + "}" + part[close + 2:]
            out += part
        elif len(part) >= 2:
            a, b, rest = part[0], part[1], part[2:]
            out += "{" + a + "}" + ("{" + b + "}" if b != "{" else "{") + rest
        else:
            out += part
    return out


def _matching_brace(s: str, start: int) -> int | None:
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _fix_sqrt(s: str) -> str:
    r"""`\sqrt3` → `\sqrt{3}`."""
    return re.sub(r"\\sqrt\s*([^{[\s\\])", r"\\sqrt{\1}", s)


# the left side of `name = answer` that is dropped: `x`, `y_1`, `a_{n}`, `\theta`, `f(x)`, `p(2)`
# a variable or function name before `=` in an answer (`x = 5`, `f(x) = 3`); `math_compare` reads it too
ANSWER_NAME = re.compile(r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:\([^()=]*\))?|.{0,2}", re.DOTALL)
_IN_PREFIX = re.compile(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+)\s*\\in(?![a-zA-Z])\s*")


def _unbox(s: str) -> str:
    r"""The content of an answer that is one `\boxed{...}` / `\fbox{...}` as a whole."""
    m = re.match(r"\\(?:boxed|fbox)\s*\{", s)
    if m and _matching_brace(s, m.end() - 1) == len(s) - 1:
        return s[m.end():-1].strip()
    return s


_ROW = "\0"  # stands for `\\` (a matrix/array row separator) while the string is normalised


def normalize_math(answer: str) -> str:
    """The normalised form of a MATH answer (see the module docstring for every rule)."""
    s = _strip_dollars(answer.strip().replace("\n", " "))
    # an answer whose every backslash is doubled (`\\frac{1}{2}`, as JSON-escaped output writes it)
    # is read undoubled; otherwise `\\` is a row separator, kept apart from the spacing commands below
    if "\\\\" in s and "\\" not in s.replace("\\\\", ""):
        s = s.replace("\\\\", "\\")
    s = s.replace("\\\\", _ROW)
    s = _unbox(s)
    s = s.replace("\\!", "").replace("{,}", ",")  # `10{,}000` is LaTeX for 10,000
    s = re.sub(r"\\(?:displaystyle|textstyle)", "", s)
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = re.sub(r"\\left\s*|\\right\s*", "", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _TEXT.sub(_unit_or_text, s)
    s = re.sub(r"\^\s*\{\s*\}", "", s)  # the power a dropped `\text{th}` leaves
    s = re.sub(r"^(\d+)\s*(?:st|nd|rd|th)$", r"\1", s.strip())  # `\text{5th}` is 5
    s = re.sub(r"\s+(?:or|and)\s+", ",", s)  # `x = 1 \text{ or } x = -2`: two answers
    s = re.sub(r"^\(\s*([A-E])\s*\)$", r"\1", s.strip())  # a choice `(C)` / `\text{(C)}` is `C`
    s = _PLAIN_UNIT.sub("", s)
    s = re.sub(r"\\[,;: ]", " ", s).strip().rstrip(".").strip()
    if s.count("=") == 1 and ANSWER_NAME.fullmatch(s.split("=")[0].strip()):  # `x = 5`, `f(x) = 5`
        s = s.split("=")[1]
    s = _IN_PREFIX.sub("", s)  # `x \in [2, 5]` -> `[2, 5]`
    s = _fix_sqrt(s).replace(" ", "").replace(_ROW, "\\\\")
    s = _fix_fracs(s)
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)  # a/b -> \frac{a}{b}
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # thousands separators
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d*\.?\d+", s):  # plain numbers: no leading zeros, no trailing .0
        s = normalize_number(s) or s
    return s
