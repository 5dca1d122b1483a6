r"""MATH-500 (Lightman et al., 2023): 500 competition problems from the MATH test set.

Data: records with `problem`, `solution` and (MATH-500) `answer`, `subject`, `level`,
`unique_id`, as in `HuggingFaceH4/MATH-500`; split `test`. Without an `answer` field (the full
MATH files) the reference is the last `\boxed{}` of `solution`. An item's id is
`math500:<unique_id>` (e.g. `math500:test/precalculus/807.json`), else `math500:test:<index>`.

Prompts: zero-shot asks for step-by-step reasoning and a final `\boxed{}` answer; k-shot (k ≤ 4)
prepends the Minerva exemplars (Lewkowycz et al., 2022) as `Problem: ... Solution: ...` and
stops at the next `Problem:` that starts a line (lm-evaluation-harness `minerva_math` stops at
`Problem:` anywhere; zero-shot completions are not cut there: a heading like `## Understanding
the Problem:` is the model's own text). Scoring: `extract.extract_math` then `extract.math_equal`
(normalised strings, closed-form values, or tuples / sets element by element).
"""

from __future__ import annotations

from depmask.tasks.base import Example
from depmask.tasks.benchmarks.base import Benchmark, Grade, text_field
from depmask.tasks.benchmarks.extract import extract_math, last_boxed, normalize_math
from depmask.tasks.benchmarks.math_compare import math_equal
from depmask.tasks.benchmarks.source import DataSpec

ZERO_SHOT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# (problem, solution): the four Minerva exemplars (as in lm-evaluation-harness `minerva_math`)
MINERVA_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (r"Find the domain of the expression $\frac{\sqrt{x-2}}{\sqrt{5-x}}$.",
     r"The expressions inside each square root must be non-negative. Therefore, $x-2 \ge 0$, so $x\ge2$, and $5 - x \ge 0$, so $x \le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\boxed{[2,5)}$."
     "\nFinal Answer: The final answer is $[2,5)$. I hope it is correct."),
    (r"If $\det \mathbf{A} = 2$ and $\det \mathbf{B} = 12,$ then find $\det (\mathbf{A} \mathbf{B}).$",
     r"We have that $\det (\mathbf{A} \mathbf{B}) = (\det \mathbf{A})(\det \mathbf{B}) = (2)(12) = \boxed{24}.$"
     "\nFinal Answer: The final answer is $24$. I hope it is correct."),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times must Terrell lift them in order to lift the same total weight?",
     r"If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\cdot 12\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\cdot15\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:"
     "\n" r"\begin{align*}" "\n" r"30n&=480\\" "\n" r"\Rightarrow\qquad n&=480/30=\boxed{16}" "\n" r"\end{align*}"
     "\nFinal Answer: The final answer is $16$. I hope it is correct."),
    ("If the system of equations\n\n" r"\begin{align*}" "\n" r"6x-4y&=a,\\" "\n" r"6y-9x &=b." "\n" r"\end{align*}"
     r"has a solution $(x, y)$ where $x$ and $y$ are both nonzero, find $\frac{a}{b},$ assuming $b$ is nonzero.",
     r"If we multiply the first equation by $-\frac{3}{2}$, we obtain" "\n\n" r"$$6y-9x=-\frac{3}{2}a.$$"
     r"Since we also know that $6y-9x=b$, we have" "\n\n" r"$$-\frac{3}{2}a=b\Rightarrow\frac{a}{b}=\boxed{-\frac{2}{3}}.$$"
     "\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct."),
)  # fmt: skip


class Math500(Benchmark):
    """MATH-500 from local files; see the module docstring for prompts and scoring."""

    name = "math500"
    splits = ("test",)
    spec = DataSpec("math500", hub_id="HuggingFaceH4/MATH-500")
    max_shots = len(MINERVA_EXEMPLARS)
    default_shots = 0
    exemplar_stop = ("Problem:",)

    def _example(self, record: dict, index: int, split: str) -> Example:
        answer = text_field(record, "answer", numbers=True) if record.get("answer") is not None else None
        if answer is None:
            answer = last_boxed(text_field(record, "solution")) if record.get("solution") is not None else None
        if answer is None:
            raise ValueError(f"math500 record {index} has neither `answer` nor a \\boxed{{}} solution")
        uid = record.get("unique_id")
        eid = f"{self.name}:{uid}" if uid else f"{self.name}:{split}:{index}"
        meta = {k: record[k] for k in ("subject", "level", "unique_id", "solution") if k in record}
        return Example(id=eid, task=self.name, prompt=text_field(record, "problem"), answer=answer,
                       meta={**meta, "index": index})

    def _user_text(self, example: Example, shots: int, chat: bool) -> str:
        if shots == 0:
            return f"{example.prompt.strip()}\n{ZERO_SHOT_INSTRUCTION}"
        demos = "".join(f"Problem:\n{p}\n\nSolution:\n{s}\n\n" for p, s in MINERVA_EXEMPLARS[:shots])
        return f"{demos}Problem:\n{example.prompt.strip()}\n\nSolution:"

    def grade_one(self, example: Example, completion: str) -> Grade:
        raw = extract_math(self.clean(completion))
        if raw is None:
            return Grade(False, None, example.answer, "no_answer")
        ok = math_equal(raw, example.answer)
        return Grade(ok, normalize_math(raw), normalize_math(example.answer), "correct" if ok else "wrong")
