"""The tiny MDLM's word-level tokenizer: vocabulary, specials, round-trips, save/load."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from depmask.models.tiny_mdlm.tokenizer import SPECIAL_TOKENS, build_tokenizer
from depmask.tasks import EOS, MASK, PAD, TASKS, UNK, Sort, get_task, task_symbols


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(task_symbols())


def test_vocab_and_specials(tok):
    assert SPECIAL_TOKENS == (PAD, UNK, MASK, EOS)
    symbols = sorted({s for name in TASKS for s in get_task(name).symbols})
    vocab = tok.get_vocab()
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] == [*SPECIAL_TOKENS, *symbols]
    ids = {tok.pad_token_id, tok.unk_token_id, tok.mask_token_id, tok.eos_token_id}
    assert ids == {0, 1, 2, 3}
    assert (tok.pad_token, tok.mask_token, tok.eos_token) == (PAD, MASK, EOS)
    assert build_tokenizer(task_symbols()).get_vocab() == vocab  # deterministic
    small = build_tokenizer(task_symbols([Sort(), "sort"]))
    assert len(small) == len(SPECIAL_TOKENS) + 11


def test_round_trip(tok):
    for name in TASKS:
        for ex in get_task(name).examples("test", 5):
            text = f"{ex.prompt} {ex.answer}"
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(text.split())
            assert tok.unk_token_id not in ids
            assert tok.decode(ids) == text
    ids = tok("<sort> 1 [MASK] [EOS] [PAD] ???")["input_ids"]
    assert ids[2:] == [tok.mask_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id]


def test_save_and_load(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.mask_token_id, loaded.pad_token_id, loaded.eos_token_id) == (
        tok.mask_token_id, tok.pad_token_id, tok.eos_token_id)
    text = "<sudoku4> 1 . . 4 | . . . . | . . . . | . . . . 1 2 [MASK] [EOS]"
    assert loaded.decode(loaded(text)["input_ids"]) == text


@pytest.mark.parametrize("symbols, message", [("sort", "iterable of words"), (5, "iterable of words"),
                                              ([Sort()], "must hold words")])
def test_symbols_must_be_words(symbols, message):
    with pytest.raises(TypeError, match=message):
        build_tokenizer(symbols)


def test_task_symbols_refuses_a_non_task():
    with pytest.raises(ValueError, match="neither a task name nor has `symbols`"):
        task_symbols([3])
