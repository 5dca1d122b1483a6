"""Token-level text helpers shared by the synthetic tasks.

Prompts and answers are strings of space-separated tokens. This module splits decoded
completions, strips trailing special tokens and pads answers to the canvas length. It knows
nothing about any one task and never tokenizes into ids (that is the tokenizer's job).
"""

from __future__ import annotations

from collections.abc import Sequence

PAD = "[PAD]"
UNK = "[UNK]"
MASK = "[MASK]"
EOS = "[EOS]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, MASK, EOS)

_TRAILING = (EOS, PAD)


def completion_tokens(completion: str) -> list[str]:
    """Split a decoded completion on whitespace and drop trailing `[EOS]` / `[PAD]` tokens.

    Specials elsewhere (a `[MASK]` left in, an `[EOS]` before a digit) are kept, so a verifier
    sees them and rejects the completion.
    """
    tokens = completion.split()
    while tokens and tokens[-1] in _TRAILING:
        tokens.pop()
    return tokens


def pad_answer(tokens: Sequence[str], length: int) -> str:
    """Join `tokens` with spaces, padded with `[EOS]` to exactly `length` tokens."""
    if len(tokens) > length:
        raise ValueError(f"answer has {len(tokens)} tokens, more than `length` ({length})")
    return " ".join([*tokens, *([EOS] * (length - len(tokens)))])
