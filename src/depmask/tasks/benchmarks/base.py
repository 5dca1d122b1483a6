"""`Benchmark`: the base of the real text benchmarks (GSM8K, MATH-500, HumanEval, MBPP).

A benchmark is Task-like — `name`, `examples(split, n, seed)` returning `depmask.tasks.Example`s,
`score(example, completion) -> bool`, `show(...)` — but its items come from local files (see
`source.py`), its prompts are natural language built for a real tokenizer, and its answers have no
fixed length. Instead of the synthetic tasks' `answer_length`, a benchmark carries the canvas it
is decoded with, `gen_length` (default 256) and `block_length` (default 32), the setting the
CLAD, DUS and Fast-dLLM papers report; `answer_length` returns `gen_length` for code that reads it.

What a runner does with one:

    bench = get_benchmark("gsm8k", path=..., shots=0)
    examples = bench.examples("test", n=200, seed=0)
    prompts = [bench.prompt_ids(ex, tokenizer) for ex in examples]       # chat template if any
    result = generate(denoiser, prompts, policy, gen_length=bench.gen_length,
                      block_length=bench.block_length, steps=...)
    completions = [bench.completion_text(row, tokenizer, denoiser.eos_ids) for row in result.generated.tolist()]
    grades = bench.grade(examples, completions)                           # sandboxed for code
    accuracy = sum(g.correct for g in grades) / len(grades)

This module does not decode, tokenize beyond calling the tokenizer, or execute code.
"""

from __future__ import annotations

import os
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from depmask.tasks.base import Example, check_int, check_optional_bool
from depmask.tasks.benchmarks.extract import truncate_at
from depmask.tasks.benchmarks.source import DataSpec, locate_records

# end-of-text strings some tokenizers leave in decoded text (cut there before extracting)
SPECIAL_STOPS: tuple[str, ...] = ("<|endoftext|>", "<|eot_id|>", "<|im_end|>", "</s>", "<|end_of_text|>", "[EOS]")


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion.

    correct: the completion is right.
    prediction: what was extracted (a normalised answer, or the program's function code).
    reference: the reference answer (for code: the entry points the tests call).
    status: `correct`, `wrong`, `no_answer` (nothing extracted) — or, for code, the sandbox's
        status (`passed`, `failed`, `timeout`, `memory`, `error`).
    detail: a short explanation (for code: the tail of stderr).
    """

    correct: bool
    prediction: str | None
    reference: str
    status: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "prediction": self.prediction, "reference": self.reference,
                "status": self.status, "detail": self.detail}


def text_field(record: dict, key: str, *, numbers: bool = False) -> str:
    """`record[key]` as text, refused (TypeError, named) when it is another kind: a list or a dict
    there (a column-oriented export, a field stored as its repr) was turned into its repr by
    `str()` and decoded and graded as garbage. `numbers`: an int or float is taken as its text."""
    value = record[key]
    kinds = (str, int, float) if numbers else (str,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"`{key}` must be text, got {type(value).__name__} ({str(value)[:60]!r})")
    return str(value)


def text_list(record: dict, key: str) -> list[str]:
    """`record[key]` as a list of texts, refused (TypeError, named) otherwise: a `test_list` stored
    as the text of a list was iterated character by character into one-character tests."""
    value = record[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"`{key}` must be a list of texts, got {type(value).__name__} ({str(value)[:60]!r})")
    return list(value)


def has_chat_template(tokenizer: Any) -> bool:
    """True iff `tokenizer` can apply a chat template (it has one set)."""
    return bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "apply_chat_template")


def check_chat(tokenizer: Any, chat: bool | None, option: str = "chat") -> bool:
    """Whether prompts go through the chat template: `chat`, or (None) whether the tokenizer has
    one; true for a tokenizer without one is refused, naming `option`."""
    if chat is None:
        return has_chat_template(tokenizer)
    if chat and not has_chat_template(tokenizer):
        raise ValueError(f"`{option}` is true but the model's tokenizer has no chat template")
    return bool(chat)


def completion_text(ids: Sequence[int], tokenizer: Any, eos_ids: Sequence[int] = ()) -> str:
    """Decode generated ids up to (not including) the first EOS id, special tokens skipped."""
    ids = list(ids)
    stops = set(int(e) for e in eos_ids)
    for i, t in enumerate(ids):
        if int(t) in stops:
            ids = ids[:i]
            break
    return tokenizer.decode(ids, skip_special_tokens=True)


class Benchmark(ABC):
    """Base of the file-backed benchmarks; subclasses set the class attributes and implement
    `_example`, `_user_text` and `grade_one` (or override `grade` to batch)."""

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("test",)
    spec: ClassVar[DataSpec]
    max_shots: ClassVar[int] = 0
    default_shots: ClassVar[int] = 0
    stop: ClassVar[tuple[str, ...]] = ()  # cut completions at these before extracting
    # where the model starts the next exemplar of a few-shot prompt: cut there only when
    # `shots` > 0 and only at a line start (zero-shot, `Question:` is the model's own text)
    exemplar_stop: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        path: str | Path | None = None,
        shots: int | None = None,
        chat: bool | None = None,
        system_prompt: str | None = None,
        allow_download: bool | None = None,
        gen_length: int = 256,
        block_length: int = 32,
    ) -> None:
        """
        Args:
            path: a data file or directory (else `DEPMASK_<NAME>`, `DEPMASK_DATA_DIR`, ...).
            shots: few-shot exemplars in each prompt (default: the benchmark's usual setting).
            chat: wrap prompts in the tokenizer's chat template; None = when it has one.
            system_prompt: a system message for chat prompts (none by default).
            allow_download: allow `datasets.load_dataset` from the Hub (default: no, unless
                `DEPMASK_ALLOW_DOWNLOAD=1`).
            gen_length: generated tokens per item (the canvas; not a property of the answer).
            block_length: semi-autoregressive block size the benchmark is decoded with.
        """
        shots = self.default_shots if shots is None else shots
        shots = check_int("shots", shots, 0)
        if shots > self.max_shots:
            raise ValueError(f"`shots` ({shots}) must lie in [0, {self.max_shots}] for {self.name}")
        gen_length, block_length = check_int("gen_length", gen_length, 1), check_int("block_length", block_length, 1)
        check_optional_bool("chat", chat)
        check_optional_bool("allow_download", allow_download)
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError(f"`system_prompt` ({system_prompt!r}) must be text or null")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"`path` ({path!r}) must be a file or directory path")
        if gen_length % block_length:
            raise ValueError(f"`block_length` ({block_length}) must be >= 1 and divide `gen_length` ({gen_length})")
        self.path = None if path is None else str(path)
        self.shots = shots
        self.chat = chat
        self.system_prompt = system_prompt
        self.allow_download = allow_download
        self.gen_length = gen_length
        self.block_length = block_length
        self._records: dict[str, list[dict]] = {}
        self.sources: dict[str, str] = {}  # split -> where its records came from

    # ---- data --------------------------------------------------------------------------------

    @property
    def answer_length(self) -> int:
        """The generation canvas (`gen_length`), for code written against synthetic tasks."""
        return self.gen_length

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(f"`split` ({split!r}) must be one of {', '.join(self.splits)} for {self.name}")
        return split

    def records(self, split: str = "test") -> list[dict]:
        """The raw records of `split` (loaded once, then cached)."""
        self.check_split(split)
        if split not in self._records:
            records, where = locate_records(self.spec, split, self.path, self.allow_download)
            self._records[split] = self._select_split(records, split, where)
            self.sources[split] = where
        return self._records[split]

    def _select_split(self, records: list[dict], split: str, where: str) -> list[dict]:
        """Hook for files that hold several splits (MBPP); default: all records."""
        return records

    def examples(self, split: str = "test", n: int | None = None, seed: int | None = None) -> list[Example]:
        """`n` items of `split` (all if None): in file order when `seed` is None, else the first
        `n` of a permutation drawn from `seed` (so a shorter `n` is a prefix of a longer one)."""
        records = self.records(split)
        if n is not None and n < 0:
            raise ValueError(f"`n` ({n}) must be >= 0")
        order = list(range(len(records)))
        if seed is not None:
            random.Random(f"{self.name}:{split}:{seed}").shuffle(order)
        if n is not None:
            order = order[:n]
        return [self._checked_example(records[i], i, split) for i in order]

    def _checked_example(self, record: dict, index: int, split: str) -> Example:
        """`_example`, with a record that lacks a field the benchmark reads named with its source
        (a MATH file given to gsm8k raised a bare `KeyError: 'answer'`)."""
        source = f"{self.name} data from {self.sources.get(split, '?')}: record {index}"
        if not isinstance(record, dict):
            raise ValueError(f"{source} is a {type(record).__name__}, not a record (field: value)")
        try:
            return self._example(record, index, split)
        except KeyError as e:
            raise ValueError(f"{source} has no field {e.args[0]!r} (its fields: {', '.join(map(str, record)) or 'none'}); "
                             f"is this {self.name} data?") from e
        except (ValueError, TypeError) as e:  # a field of the wrong kind (`"answer": null`)
            raise ValueError(f"{source}: {e}") from e

    @abstractmethod
    def _example(self, record: dict, index: int, split: str) -> Example:
        """One `Example` (stable id, prompt = the raw question, answer = the reference)."""

    # ---- prompts -----------------------------------------------------------------------------

    @abstractmethod
    def _user_text(self, example: Example, shots: int, chat: bool) -> str:
        """The prompt as plain text (`chat`: it becomes the user message of a chat template)."""

    def uses_chat(self, tokenizer: Any, chat: bool | None = None) -> bool:
        """Whether prompts for `tokenizer` go through its chat template."""
        return check_chat(tokenizer, self.chat if chat is None else chat)

    def messages(self, example: Example, shots: int | None = None) -> list[dict[str, str]]:
        """The chat messages of one prompt (system message first when set)."""
        shots = self.shots if shots is None else shots
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return out + [{"role": "user", "content": self._user_text(example, shots, chat=True)}]

    def prompt_text(self, example: Example, tokenizer: Any = None, shots: int | None = None,
                    chat: bool | None = None) -> str:
        """The prompt as text: through `tokenizer`'s chat template (with the generation prompt)
        when it has one (or `chat=True`), else plain."""
        shots = self.shots if shots is None else shots
        if not 0 <= shots <= self.max_shots:
            raise ValueError(f"`shots` ({shots}) must lie in [0, {self.max_shots}] for {self.name}")
        if tokenizer is not None and self.uses_chat(tokenizer, chat):
            return tokenizer.apply_chat_template(self.messages(example, shots), tokenize=False,
                                                 add_generation_prompt=True)
        return self._user_text(example, shots, chat=False)

    def prompt_ids(self, example: Example, tokenizer: Any, shots: int | None = None,
                   chat: bool | None = None) -> list[int]:
        """Prompt token ids: the chat template's text (which carries its own BOS) encoded without
        added special tokens, or the plain text encoded with them (e.g. LLaDA's BOS)."""
        text = self.prompt_text(example, tokenizer, shots, chat)
        return list(tokenizer.encode(text, add_special_tokens=not self.uses_chat(tokenizer, chat)))

    @staticmethod
    def completion_text(ids: Sequence[int], tokenizer: Any, eos_ids: Sequence[int] = ()) -> str:
        """Decoded text of generated ids, cut at the first EOS id (see `completion_text`)."""
        return completion_text(ids, tokenizer, eos_ids)

    # ---- scoring -----------------------------------------------------------------------------

    def clean(self, completion: str) -> str:
        """The completion cut at the benchmark's stop strings and end-of-text markers, and (few-shot
        only) at a line starting with one of its `exemplar_stop` strings."""
        text = truncate_at(completion, (*self.stop, *SPECIAL_STOPS))
        return truncate_at(text, self.exemplar_stop, line_start=True) if self.shots else text

    @abstractmethod
    def grade_one(self, example: Example, completion: str) -> Grade:
        """The verdict on one completion."""

    def grade(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        """Verdicts for many completions (code benchmarks run them in a sandbox pool)."""
        if len(examples) != len(completions):
            raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
        return [self.grade_one(e, c) for e, c in zip(examples, completions)]

    def score(self, example: Example, completion: str) -> bool:
        """True iff `completion` answers `example` correctly."""
        return self.grade([example], [completion])[0].correct

    def show(self, example: Example, completion: str | None = None) -> str:
        """The prompt, the reference and, if given, the completion with its verdict."""
        lines = [f"[{example.id}]", example.prompt.rstrip(), f"--- reference: {example.answer.strip()[:500]}"]
        if completion is not None:
            grade = self.grade([example], [completion])[0]
            lines += [f"--- completion ({grade.status}):", completion.rstrip(),
                      f"--- extracted: {grade.prediction!r}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "sources")
        return f"{type(self).__name__}({args})"
