"""MBPP (Austin et al., 2021): short Python programming problems checked by three asserts.

Data: records with `task_id`, `text` (or `prompt`, the sanitized variant), `code`, `test_list`
and `test_setup_code` (or `test_imports`), as in the original `mbpp.jsonl` or
`google-research-datasets/mbpp`. Splits follow the paper's task-id ranges — prompt 1–10, test
11–510, validation 511–600, train 601–974 — so one file holding all 974 problems serves every
split; a file of one split's records is filtered by the same ranges. An item's id is
`mbpp:<task_id>`.

Prompts (Austin et al.; lm-evaluation-harness `mbpp`): "You are an expert Python programmer, and
here is your task: {text} Your code should pass these tests:" and the three asserts; k-shot
(default 3) prepends problems 2, 3, 4, ... of the prompt split with their code between `[BEGIN]`
and `[DONE]`, and the completion stops at `[DONE]`. In chat mode the request asks for a ```python
block instead of `[BEGIN]`. Scoring: `test_setup_code`, the solution, then the asserts run in the
sandbox (the challenge tests are not used).
"""

from __future__ import annotations

from depmask.tasks.base import Example
from depmask.tasks.benchmarks.base import text_list
from depmask.tasks.benchmarks.code import called_names
from depmask.tasks.benchmarks.code_benchmark import CodeBenchmark
from depmask.tasks.benchmarks.source import DataNotFoundError, DataSpec

SPLIT_RANGES: dict[str, tuple[int, int]] = {
    "prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974),
}
FEWSHOT_ORDER = (2, 3, 4)  # the paper's exemplars, then the rest of the prompt split in order
CHAT_INSTRUCTION = "Reply with the complete Python code in a single ```python code block."


def _description(record: dict) -> str:
    return str(record.get("text") or record.get("prompt") or "").strip()


def _setup(record: dict) -> str:
    if record.get("test_setup_code"):
        return str(record["test_setup_code"])
    return "\n".join(record.get("test_imports") or [])


class MBPP(CodeBenchmark):
    """MBPP from local files; pass@1 in the sandbox."""

    name = "mbpp"
    splits = ("train", "test", "validation", "prompt")
    spec = DataSpec("mbpp", hub_id="google-research-datasets/mbpp", hub_config="full", splits_by_record=True)
    max_shots = 10
    default_shots = 3
    stop = ("[DONE]",)

    def _select_split(self, records: list[dict], split: str, where: str) -> list[dict]:
        lo, hi = SPLIT_RANGES[split]
        for i, r in enumerate(records):  # the split is read from the ids: each needs a whole-number one
            tid = r.get("task_id") if isinstance(r, dict) else None
            if isinstance(tid, bool) or not (isinstance(tid, int) or (isinstance(tid, str) and tid.strip().isdigit())):
                raise ValueError(f"mbpp data from {where}: record {i} has no whole-number `task_id` (got {tid!r}); "
                                 "MBPP's are 1–974 (MBPP+ / EvalPlus ids like 'Mbpp/2' are not read): is this mbpp data?")
        kept = [r for r in records if lo <= int(r["task_id"]) <= hi]
        if not kept:
            ids = sorted(int(r["task_id"]) for r in records)
            span = f"{ids[0]}–{ids[-1]}" if ids else "none"
            raise DataNotFoundError(f"mbpp data from {where} has no task ids in {lo}–{hi} (split "
                                    f"{split!r}); its task ids span {span}")
        return sorted(kept, key=lambda r: int(r["task_id"]))

    def _example(self, record: dict, index: int, split: str) -> Example:
        tests = text_list(record, "test_list")
        meta = {"task_id": int(record["task_id"]), "test_list": tests, "test_setup_code": _setup(record),
                "index": index}
        return Example(id=f"{self.name}:{record['task_id']}", task=self.name, prompt=_description(record),
                       answer=str(record.get("code", "")), meta=meta)

    @staticmethod
    def _problem(description: str, tests: list[str]) -> str:
        return (f"You are an expert Python programmer, and here is your task: {description} "
                f"Your code should pass these tests:\n\n" + "\n".join(tests) + "\n")

    def fewshot_examples(self, shots: int) -> list[Example]:
        """The first `shots` exemplars: prompt-split problems 2, 3, 4, then the rest in order."""
        if shots == 0:
            return []
        try:
            pool = self.examples("prompt")
        except DataNotFoundError as e:
            raise DataNotFoundError(f"{shots}-shot MBPP prompts need the prompt split (task ids 1–10): {e}\n"
                                    "Give the full mbpp.jsonl, or a save_to_disk DatasetDict with a "
                                    "'prompt' split, or use `shots=0`.") from e
        rank = {tid: i for i, tid in enumerate(FEWSHOT_ORDER)}
        pool.sort(key=lambda ex: (rank.get(ex.meta["task_id"], len(rank)), ex.meta["task_id"]))
        if len(pool) < shots:
            raise ValueError(f"`shots` ({shots}) exceeds the {len(pool)} problems of the MBPP prompt split")
        return pool[:shots]

    def _user_text(self, example: Example, shots: int, chat: bool) -> str:
        demos = "".join(f"{self._problem(d.prompt, d.meta['test_list'])}[BEGIN]\n{d.answer.strip()}\n[DONE]\n\n"
                        for d in self.fewshot_examples(shots))
        query = self._problem(example.prompt, example.meta["test_list"])
        return demos + query + (f"\n{CHAT_INSTRUCTION}" if chat else "[BEGIN]\n")

    def entry_points(self, example: Example) -> list[str]:
        return called_names(example.meta["test_list"])

    def _prefix(self, example: Example) -> str:
        return ""

    def solution(self, example: Example, completion: str) -> str:
        setup = example.meta["test_setup_code"].strip()
        body = super().solution(example, completion)
        return f"{setup}\n\n{body}" if setup else body

    def _tests(self, example: Example) -> str:
        return "\n".join(example.meta["test_list"])
