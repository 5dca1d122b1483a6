r"""GSM8K (Cobbe et al., 2021): grade-school math word problems with a numeric answer.

Data: records with `question` and `answer` (worked solution ending in `#### <number>`), as in
the original `test.jsonl` or `openai/gsm8k` (config `main`); splits `train` and `test`. An item's
id is `gsm8k:<split>:<index in the split file>`.

Prompts: zero-shot asks for step-by-step reasoning and a final `\boxed{}` answer (what instruct
models follow best); k-shot (k ≤ 8) prepends the first k of the 8 chain-of-thought exemplars of
Wei et al. (2022) as `Question: ... Answer: ... The answer is N.` and stops at the next
`Question:` that starts a line (lm-evaluation-harness stops at `Question:` anywhere; zero-shot
completions are not cut there: the model may write the word itself). That is the content of
lm-eval's `gsm8k_cot` in the `Question:/Answer:` form of its `gsm8k`, whose k-shot exemplars are
train-split worked solutions ending in `#### N` (Fast-dLLM's 5-shot GSM8K): figures from `shots: 5`
here are not that protocol's. Scoring: the final number (`extract.extract_gsm8k`) equals the
reference by value.
"""

from __future__ import annotations

from depmask.tasks.base import Example
from depmask.tasks.benchmarks.base import Benchmark, Grade, text_field
from depmask.tasks.benchmarks.extract import extract_gsm8k, gsm8k_reference, numbers_equal
from depmask.tasks.benchmarks.source import DataSpec

ZERO_SHOT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# (question, chain of thought, answer): the 8 exemplars of Wei et al. (2022), chain-of-thought prompting
COT_EXEMPLARS: tuple[tuple[str, str, str], ...] = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6.", "6"),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.", "5"),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39.", "39"),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8.", "8"),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9.", "9"),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29.", "29"),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls.", "33"),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8.", "8"),
)  # fmt: skip


class GSM8K(Benchmark):
    """GSM8K from local files; see the module docstring for prompts and scoring."""

    name = "gsm8k"
    splits = ("train", "test")
    spec = DataSpec("gsm8k", hub_id="openai/gsm8k", hub_config="main")
    max_shots = len(COT_EXEMPLARS)
    default_shots = 0
    exemplar_stop = ("Question:",)

    def _example(self, record: dict, index: int, split: str) -> Example:
        solution = text_field(record, "answer")
        return Example(id=f"{self.name}:{split}:{index}", task=self.name, prompt=text_field(record, "question"),
                       answer=gsm8k_reference(solution), meta={"solution": solution, "index": index})

    def _user_text(self, example: Example, shots: int, chat: bool) -> str:
        if shots == 0:
            return f"{example.prompt.strip()}\n{ZERO_SHOT_INSTRUCTION}"
        demos = "".join(f"Question: {q}\nAnswer: {cot} The answer is {a}.\n\n" for q, cot, a in COT_EXEMPLARS[:shots])
        return f"{demos}Question: {example.prompt.strip()}\nAnswer:"

    def grade_one(self, example: Example, completion: str) -> Grade:
        prediction = extract_gsm8k(self.clean(completion))
        if prediction is None:
            return Grade(False, None, example.answer, "no_answer")
        ok = numbers_equal(prediction, example.answer)
        return Grade(ok, prediction, example.answer, "correct" if ok else "wrong")
