"""The word-level tokenizer of the embedded tiny MDLM.

One token per whitespace-separated word: the specials `[PAD]`, `[UNK]`, `[MASK]`, `[EOS]` (ids
0-3, set as pad/unk/mask/eos token), then the sorted union of the tasks' symbols
(`depmask.tasks.task_symbols`, which callers pass in: `models` does not import `tasks`). Encoding
adds no special tokens; decoding joins tokens with single spaces, so `decode(encode(text)) ==
text` for normalised task text. It does not build prompts or pad batches for a model (callers
do).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
MASK_TOKEN = "[MASK]"
EOS_TOKEN = "[EOS]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, MASK_TOKEN, EOS_TOKEN)


def build_tokenizer(symbols: Iterable[str]) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer over the words `symbols` (the tasks' symbols:
    `depmask.tasks.task_symbols(tasks)`).

    The vocabulary is the specials followed by the sorted union of the words, so the same words
    always give the same ids.
    """
    if isinstance(symbols, str) or not isinstance(symbols, Iterable):
        raise TypeError(f"`symbols` must be an iterable of words (e.g. depmask.tasks.task_symbols()), "
                        f"got {type(symbols).__name__}")
    symbols = list(symbols)
    wrong = [s for s in symbols if not isinstance(s, str)]
    if wrong:
        raise TypeError(f"`symbols` must hold words (str); got {wrong[0]!r} ({type(wrong[0]).__name__}); "
                        "pass a task's symbols, depmask.tasks.task_symbols([task])")
    words = sorted(set(symbols) - set(SPECIAL_TOKENS))
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
