"""The unmasking trajectory of one decoded row, as text: the answer canvas after every forward that
committed something, so a person can see what a policy commits together.

    forward 1 │ · · 3 3 · · · 9 │ +3
    forward 2 │ 1 2 3 3 5 7 8 9 │ +5

Built from `DecodeResult.commit_step` (1-based forward of each answer position's commit; 0 for a
position filled after an early stop, shown masked throughout) and the row's answer tokens, one
string per position. Forwards that committed nothing (an oracle's probe forwards, for instance)
get no line. This module does not decode.
"""

from __future__ import annotations

from collections.abc import Sequence

MASK = "·"


def trajectory_lines(commit_step: Sequence[int], tokens: Sequence[str], mask: str = MASK) -> list[str]:
    """One line per forward that committed a position: the canvas after it and how many it
    committed. `commit_step` and `tokens` are the row's answer positions, in order."""
    if len(commit_step) != len(tokens):
        raise ValueError(f"`commit_step` has {len(commit_step)} positions but `tokens` has {len(tokens)}; "
                         "expected one token string per answer position")
    if any(s < 0 for s in commit_step):
        raise ValueError(f"`commit_step` ({list(commit_step)}) must be >= 0 (0: never committed)")
    width = max([len(mask), *(len(t) for t in tokens)])
    steps = sorted({s for s in commit_step if s > 0})
    label = len(str(steps[-1])) if steps else 1
    lines = []
    for step in steps:
        cells = [(t if 0 < s <= step else mask).ljust(width) for s, t in zip(commit_step, tokens)]
        count = sum(s == step for s in commit_step)
        lines.append(f"forward {step:>{label}} │ {' '.join(cells).rstrip()} │ +{count}")
    return lines


def token_strings(ids: Sequence[int], tokenizer=None) -> list[str]:
    """Printable strings of answer tokens: the tokenizer's pieces (whitespace markers stripped,
    an empty piece shown as `∅`), or the ids when there is no tokenizer."""
    if tokenizer is None:
        return [str(i) for i in ids]
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    out = []
    for piece, i in zip(pieces, ids):
        text = str(piece if piece is not None else i).replace("Ġ", "").replace("▁", "").strip()
        out.append(text or "∅")
    return out
