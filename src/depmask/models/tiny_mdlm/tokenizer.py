"""The word-level tokenizer of the embedded tiny MDLM.

One token per whitespace-separated word: the specials `[PAD]`, `[UNK]`, `[MASK]`, `[EOS]` (ids
0-3, set as pad/unk/mask/eos token), then the sorted union of the tasks' symbols. Encoding adds
no special tokens; decoding joins tokens with single spaces, so `decode(encode(text)) == text`
for normalised task text. It does not build prompts or pad batches for a model (callers do).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

if TYPE_CHECKING:
    from depmask.tasks import Task

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
MASK_TOKEN = "[MASK]"
EOS_TOKEN = "[EOS]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, MASK_TOKEN, EOS_TOKEN)


def _task_symbols(tasks: Iterable[Task | str] | None) -> set[str]:
    """The union of the tasks' symbols; task names are built with their default arguments."""
    from depmask.tasks import TASKS, get_task  # lazy: the default vocabulary comes from the tasks

    items = list(TASKS) if tasks is None else list(tasks)
    symbols: set[str] = set()
    for task in items:
        task = get_task(task) if isinstance(task, str) else task
        if not hasattr(task, "symbols"):
            raise ValueError(f"`tasks` item {task!r} is neither a task name nor has `symbols`")
        symbols.update(task.symbols)
    return symbols


def build_tokenizer(tasks: Iterable[Task | str] | None = None) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer over `tasks` (task instances or registered names; default:
    every registered task with its default arguments).

    The vocabulary is the specials followed by the sorted union of the tasks' symbols, so the
    same tasks always give the same ids.
    """
    words = sorted(_task_symbols(tasks) - set(SPECIAL_TOKENS))
    bad = [w for w in words if not w or any(ch.isspace() for ch in w)]
    if bad:
        raise ValueError(f"task symbols must be non-empty and contain no whitespace: {bad!r}")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        eos_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
