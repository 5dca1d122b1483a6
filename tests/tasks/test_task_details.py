"""Details of the synthetic tasks, the task adapter and model fingerprints that the broader task
tests leave open: prompt layouts token by token, canonical split keys, the bounds of the size
arguments, the checkers' edge cases, and what a fingerprint compares."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from depmask.tasks import (
    EOS,
    Addition,
    Example,
    Permutation,
    Sort,
    Sudoku4,
    completion_tokens,
    pad_answer,
    task_symbols,
)
from depmask.tasks.adapter import TaskAdapter, _source_digest
from depmask.tasks.base import check_int
from depmask.tasks.sudoku4 import _UNITS, valid_grids

# ----- sudoku4 -----


def test_sudoku_prompt_is_the_givens_row_major_with_row_separators():
    """`<sudoku4>` then 4 rows of 4 cells, `|` between rows (20 tokens), the cells being the givens
    row by row (not column by column), and the reference answer keeps every given."""
    task = Sudoku4()
    for ex in task.examples("train", 30, seed=2):
        tokens = ex.prompt.split()
        assert len(tokens) == 20 and tokens[0] == "<sudoku4>"
        assert [i for i, t in enumerate(tokens) if t == "|"] == [5, 10, 15]
        assert "".join(t for t in tokens[1:] if t != "|") == ex.meta["givens"]
        answer = ex.answer.split()
        assert all(ch == "." or answer[i] == ch for i, ch in enumerate(ex.meta["givens"]))


def test_sudoku_givens_reach_both_bounds_including_a_full_grid():
    """The number of givens is uniform over [min_givens, max_givens], both ends included; 16
    givens (every cell shown) is a legal bound, whose one solution is the reference."""
    task = Sudoku4(min_givens=5, max_givens=6)
    assert {ex.meta["n_givens"] for ex in task.examples("train", 60, seed=0)} == {5, 6}
    full = Sudoku4(min_givens=16, max_givens=16)
    for ex in full.examples("test", 5, seed=0):
        assert "." not in ex.meta["givens"] and ex.meta["n_solutions"] == 1
        assert ex.answer.replace(" ", "") == ex.meta["givens"] and full.score(ex, ex.answer)


def _units_ok(grid: str, units) -> bool:
    return all(len({grid[i] for i in u}) == 4 for u in units)


def test_sudoku_checker_needs_every_row_column_and_box():
    """A grid whose rows and boxes are fine but whose columns repeat is wrong, and so is its
    transpose (columns and boxes fine, rows repeat), and a latin square whose boxes repeat: the
    checker misses no kind of unit."""
    rows, cols, boxes = _UNITS[:4], _UNITS[4:8], _UNITS[8:]
    bad_cols = "1234" "3412" "2143" "4312"
    assert _units_ok(bad_cols, rows + boxes) and not _units_ok(bad_cols, cols)
    bad_rows = "".join(bad_cols[4 * c + r] for r in range(4) for c in range(4))  # the transpose
    assert _units_ok(bad_rows, cols + boxes) and not _units_ok(bad_rows, rows)
    latin = "1234" "2341" "3412" "4123"  # rows and columns fine, boxes repeat
    assert _units_ok(latin, rows + cols) and not _units_ok(latin, boxes)
    blank = Example("blank", "sudoku4", "<sudoku4>", " ".join(valid_grids()[0]), {"givens": "." * 16})
    task = Sudoku4()
    assert not task.score(blank, " ".join(bad_cols))
    assert not task.score(blank, " ".join(bad_rows))
    assert not task.score(blank, " ".join(latin))
    assert all(task.score(blank, " ".join(g)) for g in valid_grids()[:20])


# ----- permutation, sort, addition: canonical keys and layouts -----


def test_permutation_checker_counts_repeats():
    """Same length and same set of letters is not enough: `a b b` is no ordering of `a a b`."""
    ex = Example("x", "permutation", "<permutation> a b a", "a a b", {"multiset": "a a b"})
    task = Permutation(n=3)
    assert task.score(ex, "b a a") and task.score(ex, "a b a")
    assert not task.score(ex, "a b b") and not task.score(ex, "b b a")


def _assert_sorted_keys_split_apart(task) -> None:
    """Each item's key is its prompt's symbols sorted, and no key is in both splits."""
    train = task.examples("train", 300, seed=0)
    test = task.examples("test", 100, seed=0)
    for ex in train + test:
        assert ex.meta["key"] == "".join(sorted(ex.prompt.split()[1:]))
    assert not {ex.meta["key"] for ex in train} & {ex.meta["key"] for ex in test}


def test_permutation_test_multisets_never_appear_in_training_in_any_order():
    """The key is the sorted multiset, so a test multiset is absent from training in every order;
    small instance space (27 orderings of 3 letters) so that orders collide."""
    _assert_sorted_keys_split_apart(Permutation(n=3, n_symbols=3, test_fraction=0.3))


def test_sort_key_is_the_sorted_digits():
    """A test multiset of digits never appears in training in another order; digits are 0–9."""
    assert {d for ex in Sort().examples("train", 40, seed=0) for d in ex.prompt.split()[1:]} == set("0123456789")
    _assert_sorted_keys_split_apart(Sort(n=2, test_fraction=0.3))


def test_addition_a_plus_b_and_b_plus_a_share_a_split():
    """The key is the unordered pair: `b + a` of a test item is never a training item."""
    task = Addition(digits=1, test_fraction=0.3)
    train = task.examples("train", 300, seed=0)
    test = task.examples("test", 100, seed=0)
    pair = lambda ex: frozenset(Counter((ex.meta["a"], ex.meta["b"])).items())  # noqa: E731
    assert not {pair(e) for e in train} & {pair(e) for e in test}
    for ex in train + test:
        a, b = ex.meta["a"], ex.meta["b"]
        assert ex.meta["key"] == f"{min(a, b)}+{max(a, b)}"


def test_addition_prompt_pads_both_operands_to_fixed_columns():
    """`<addition> a… + b… =`: 2·digits + 3 tokens, both operands zero-padded to `digits`."""
    task = Addition(digits=3)
    for ex in task.examples("train", 50, seed=0):
        tokens = ex.prompt.split()
        assert len(tokens) == 9 and tokens[0] == "<addition>" and tokens[4] == "+" and tokens[8] == "="
        assert "".join(tokens[1:4]) == str(ex.meta["a"]).zfill(3)
        assert "".join(tokens[5:8]) == str(ex.meta["b"]).zfill(3)


def test_addition_operands_take_every_length_up_to_digits():
    """A number's length is uniform in [1, digits]: with 2 digits both one- and two-digit operands
    occur, up to 99."""
    task = Addition(digits=2)
    ops = [x for ex in task.examples("train", 1000, seed=0) for x in (ex.meta["a"], ex.meta["b"])]
    assert max(ops) == 99 and min(ops) == 0
    assert sum(x >= 10 for x in ops) > 300 and sum(x < 10 for x in ops) > 300


# ----- sizes, bounds, text helpers -----


def test_size_arguments_accept_their_bounds():
    """The bounds of `check_int` are inclusive: the largest alphabet and the fewest items work,
    and a draw of 0 items is empty."""
    assert check_int("x", 26, 1, 26) == 26 and check_int("x", 1, 1) == 1
    assert Permutation(n_symbols=26).alphabet[-1] == "z"
    assert Sort(n=1).examples("test", 2)[0].answer in "0123456789"
    assert Sort().examples("test", 0) == []
    assert Sudoku4(max_givens=16).max_givens == 16


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_a_split_fraction_at_either_end_is_refused(fraction):
    """0 or 1 leave one split empty (its draws would run out after 10 000 tries)."""
    with pytest.raises(ValueError, match=r"`test_fraction` .* must lie in \(0, 1\)"):
        Sort(test_fraction=fraction)


def test_completion_tokens_and_pad_answer():
    """Completions split on any whitespace; answers pad with `[EOS]` to exactly `length`."""
    assert completion_tokens(" 1  2\n3\t[EOS] [PAD]") == ["1", "2", "3"]
    assert pad_answer(["1", "2"], 4) == f"1 2 {EOS} {EOS}"
    assert pad_answer(["1", "2"], 2) == "1 2"
    with pytest.raises(ValueError, match="more than `length`"):
        pad_answer(["1", "2", "3"], 2)


def test_task_symbols_default_covers_every_task():
    assert task_symbols() == task_symbols(["sudoku4", "permutation", "sort", "addition"])
    assert {"+", "=", "|", ".", "h", "<addition>"} <= task_symbols()


# ----- the adapter -----


class _Tok:
    """A word-level tokenizer with a fixed vocabulary."""

    def __init__(self, words):
        self.vocab = {w: i for i, w in enumerate(words)}

    def get_vocab(self):
        return dict(self.vocab)

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids):
        inv = {i: w for w, i in self.vocab.items()}
        return [inv[i] for i in ids]


def test_adapter_checks_each_tokenizer_and_the_tag_token():
    """The symbol check is cached per tokenizer, not once for all: a second tokenizer lacking the
    task's tag is refused too."""
    adapter = TaskAdapter.build("sort")
    ex = adapter.examples("test", 1, 0)[0]
    full = _Tok(["<sort>", *"0123456789"])
    assert full.convert_ids_to_tokens(adapter.prompt_ids(ex, full)) == ex.prompt.split()
    with pytest.raises(ValueError, match=r"uses 1 symbol\(s\) .*: <sort>"):
        adapter.prompt_ids(ex, _Tok(list("0123456789")))


def test_adapter_lengths_seed_grading_and_completion():
    adapter = TaskAdapter.build("sudoku4")
    adapter.check_gen_length(16)  # exactly the answer: fine
    with pytest.raises(ValueError, match="shorter than its answer"):
        adapter.check_gen_length(15)
    assert adapter.gen_length == adapter.block_length == 16
    assert adapter.given == frozenset() and TaskAdapter.build("sudoku4", min_givens=5).given == {"min_givens"}
    sort = TaskAdapter.build("sort")
    items = sort.examples("test", 3, 7)
    assert items == Sort().examples("test", 3, seed=7) != Sort().examples("test", 3, seed=0)
    wrong = "9 9 9 9 9 9 9 9" if items[0].answer != "9 9 9 9 9 9 9 9" else "0 0 0 0 0 0 0 0"
    assert sort.grade(items, [items[0].answer, wrong, items[2].answer]) == [True, False, True]
    tok = _Tok(["<sort>", *"0123456789", EOS])
    assert sort.completion(tok.convert_tokens_to_ids(["1", "2", EOS]), tok) == f"1 2 {EOS}"


def test_the_grader_digest_covers_file_names(tmp_path):
    """Renaming a grading module (same bytes) is other code: another digest."""
    (tmp_path / "a.py").write_text("x = 1\n")
    before = _source_digest(tmp_path)
    _source_digest.cache_clear()
    (tmp_path / "a.py").rename(tmp_path / "b.py")
    assert _source_digest(tmp_path) != before
    _source_digest.cache_clear()


# ----- fingerprints -----


def test_fingerprint_names_revisions_and_same_model():
    from depmask.models.fingerprint import fingerprint, revision_of, same_model, weights_hash

    snap = "/hub/models--x/snapshots/0123456789abcdef0123456789abcdef01234567"
    assert revision_of(snap) == "0123456789ab" and revision_of("/some/dir") == revision_of(None) == "local"
    model = torch.nn.Linear(2, 2)
    fp = fingerprint(model, name="mine", path=snap)
    assert fp.startswith("mine@0123456789ab:noconfig-")
    assert fingerprint(model, path=snap).startswith(snap.rsplit("/", 1)[1] + "@")
    assert same_model("a@local:c1-w1", "b@0123:c1-w1")  # a copy elsewhere is the same model
    assert not same_model("a@local:c1-w1", "a@local:c2-w1")  # another config
    assert not same_model("a@local:c1-w1", "a@local:c1-w2")
    assert not same_model(None, "a@local:c1-w1") and not same_model("a@local:c1-w1", None)
    assert weights_hash(torch.nn.ReLU()) == "noweights"


def test_stored_values_of_another_size_are_not_hashed():
    """A stored tensor is used only if it has the loaded tensor's size; else it is hashed as loaded."""
    from depmask.models.fingerprint import weights_hash

    model = torch.nn.Linear(3, 2)
    short = lambda name, values: torch.zeros(1)  # noqa: E731
    assert weights_hash(model, stored=short) == weights_hash(model)


def test_the_reader_finds_names_with_the_prefix_added(tmp_path):
    """A name is looked up with `prefix.` added or removed; a scalar is read whole."""
    from safetensors.torch import save_file

    from depmask.models.fingerprint import stored_tensors

    path = tmp_path / "ckpt"
    path.mkdir()
    save_file({"model.w": torch.arange(6.0), "s": torch.tensor(2.0)}, path / "model.safetensors")
    read = stored_tensors(path, prefix="model")
    assert torch.equal(read("w", 4), torch.arange(4.0))  # looked up as `model.w`
    assert torch.equal(read("s", 3), torch.tensor([2.0]))
    other = tmp_path / "base"
    other.mkdir()
    save_file({"w": torch.arange(5.0)}, other / "model.safetensors")
    assert torch.equal(stored_tensors(other, prefix="model")("model.w", 2), torch.arange(2.0))  # prefix removed
