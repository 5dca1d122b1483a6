"""Behaviour of the synthetic tasks: determinism, split hygiene, exact verifiers, rendering."""

from __future__ import annotations

import random

import pytest

from depmask.tasks import (
    EOS,
    MASK,
    TASKS,
    Addition,
    Example,
    Permutation,
    Sort,
    Sudoku4,
    Task,
    get_task,
    task_symbols,
)
from depmask.tasks.sudoku4 import solutions, valid_grids

NAMES = sorted(TASKS)


@pytest.fixture(params=NAMES)
def task(request):
    return get_task(request.param)


def test_registry_and_get_task():
    assert set(TASKS) == {"sudoku4", "permutation", "sort", "addition"}
    assert isinstance(get_task("sort", n=5), Sort)
    with pytest.raises(ValueError, match="nope.*addition"):
        get_task("nope")


def test_protocol(task):
    assert isinstance(task, Task)
    assert task.name in TASKS
    assert len(set(task.symbols)) == len(task.symbols)
    assert f"<{task.name}>" in task.symbols


def test_bad_split_and_arguments(task):
    with pytest.raises(ValueError, match="'dev'"):
        task.examples("dev", 3)
    with pytest.raises(ValueError, match="min_givens"):
        Sudoku4(min_givens=9, max_givens=3)
    with pytest.raises(ValueError, match="test_fraction"):
        Sort(test_fraction=1.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 2.5}, r"`n` \(2.5\) must be an integer"),  # drew 3 items
    ({"n": True}, r"`n` \(True\) must be an integer"),
    ({"n": "3"}, r"`n` \('3'\) must be an integer"),
    ({"n": -1}, r"`n` \(-1\) must be >= 0"),
    ({"n": 2, "seed": 1.0}, r"`seed` \(1.0\) must be an integer"),  # other items than seed 1
    ({"n": 2, "seed": None}, r"`seed` \(None\) must be an integer"),
])
def test_the_count_and_seed_of_a_draw_are_integers(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sort().examples("test", **kwargs)


@pytest.mark.parametrize("tasks", ["sort", 5])
def test_task_symbols_wants_a_list(tasks):
    with pytest.raises(TypeError, match="must be a list of task names or tasks"):
        task_symbols(tasks)


def test_deterministic(task):
    a = task.examples("train", 20, seed=3)
    assert a == task.examples("train", 20, seed=3)
    assert a[:5] == task.examples("train", 5, seed=3)
    assert a != task.examples("train", 20, seed=4)
    assert len({e.id for e in a}) == 20
    assert a[0].id == f"{task.name}:train:3:0"


def test_formats(task):
    vocab = set(task.symbols) | {EOS}
    for ex in task.examples("train", 50):
        prompt, answer = ex.prompt.split(), ex.answer.split()
        assert prompt[0] == f"<{task.name}>"
        assert len(prompt) <= 30
        assert len(answer) == task.answer_length
        assert set(prompt) | set(answer) <= vocab
        assert ex.task == task.name


def test_train_test_never_overlap(task):
    train = task.examples("train", 2000)
    test = task.examples("test", 500)
    train_keys = {e.meta["key"] for e in train}
    test_keys = {e.meta["key"] for e in test}
    assert not train_keys & test_keys
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert all(task.split_of(k) == "test" for k in test_keys)


def test_reference_and_sampled_answers_score(task):
    rng = random.Random(0)
    for ex in task.examples("test", 60):
        assert task.score(ex, ex.answer)
        for _ in range(5):
            sampled = task.sample_answer(ex, rng)
            assert len(sampled.split()) == task.answer_length
            assert task.score(ex, sampled)


def test_malformed_completions_are_false(task):
    ex = task.examples("test", 1)[0]
    ref = [t for t in ex.answer.split() if t != EOS]
    bad = [
        "",
        " ".join(ref[:-1]),  # too short
        " ".join([*ref, ref[0]]),  # too long
        " ".join([MASK, *ref[1:]]),  # a [MASK] left in
        " ".join(["zz", *ref[1:]]),  # an unknown token
        " ".join([ref[0], EOS, *ref[1:]]),  # an [EOS] inside the answer
        "".join(ref) if len(ref) > 1 else "12",  # not space-separated
    ]
    for completion in bad:
        assert not task.score(ex, completion), completion
    assert task.score(ex, " ".join(ref) + f" {EOS} [PAD] [PAD]")  # trailing specials stripped


def test_show(task):
    ex = task.examples("test", 1)[0]
    text = task.show(ex)
    assert ex.id in text and "\n" in text
    assert "correct" in task.show(ex, ex.answer)
    assert "wrong" in task.show(ex, "garbage")


# ----- sudoku4 -----


def test_sudoku_grids_and_meta():
    grids = valid_grids()
    assert len(grids) == 288 == len(set(grids))
    task = Sudoku4()
    for ex in task.examples("train", 100):
        givens = ex.meta["givens"]
        assert 4 <= ex.meta["n_givens"] == 16 - givens.count(".") <= 10
        assert ex.meta["n_solutions"] == len(solutions(givens)) >= 1


def test_sudoku_rejects_violations():
    prompt = "<sudoku4> " + " | ".join([". . . ."] * 4)
    empty = Example("blank", "sudoku4", prompt, " ".join(valid_grids()[0]), {"givens": "." * 16})
    latin = "1 2 3 4 2 3 4 1 3 4 1 2 4 1 2 3"  # rows and columns fine, boxes violated
    assert not Sudoku4().score(empty, latin)
    assert Sudoku4().score(empty, " ".join(valid_grids()[0]))
    assert not Sudoku4().score(empty, " ".join("1" * 16))

    task = Sudoku4()
    ex = task.examples("test", 1)[0]
    cells = ex.answer.split()
    given = next(i for i, ch in enumerate(ex.meta["givens"]) if ch != ".")
    # a valid grid that breaks a given
    other = next(g for g in valid_grids() if g[given] != cells[given])
    assert not task.score(ex, " ".join(other))
    # a wrong digit in one cell
    wrong = list(cells)
    blank = ex.meta["givens"].index(".")
    wrong[blank] = "1" if wrong[blank] != "1" else "2"
    assert not task.score(ex, " ".join(wrong))


def test_sudoku_few_givens_accepts_other_completions():
    task = Sudoku4(min_givens=3, max_givens=4)
    ex = next(e for e in task.examples("test", 50) if e.meta["n_solutions"] > 2)
    others = [g for g in solutions(ex.meta["givens"]) if " ".join(g) != ex.answer]
    assert others and all(task.score(ex, " ".join(g)) for g in others)
    rng = random.Random(0)
    sampled = {task.sample_answer(ex, rng) for _ in range(200)}
    assert len(sampled) == ex.meta["n_solutions"]  # the sampler covers every solution


# ----- permutation, sort, addition -----


def test_permutation_multimodal_and_duplicates():
    task = Permutation()
    ex = next(e for e in task.examples("test", 50) if len(set(e.meta["multiset"].split())) < 6)
    rng = random.Random(1)
    sampled = {task.sample_answer(ex, rng) for _ in range(100)}
    assert len(sampled) > 1
    items = ex.meta["multiset"].split()  # sorted, not all equal
    corrupted = [*items[:-1], items[0]]  # duplicate one symbol in place of another
    assert not task.score(ex, " ".join(corrupted))
    assert task.score(ex, " ".join(reversed(items)))


def test_sort_and_addition_one_answer():
    sort = Sort()
    ex = sort.examples("test", 1)[0]
    digits = ex.prompt.split()[1:]
    assert ex.answer.split() == sorted(digits)
    if digits != sorted(digits):
        assert not sort.score(ex, " ".join(digits))

    add = Addition()
    for ex in add.examples("test", 100):
        assert ex.meta["a"] + ex.meta["b"] == ex.meta["sum"]
        assert ex.answer.replace(" ", "") == str(ex.meta["sum"]).zfill(4)  # fixed width, columns aligned
        assert ex.prompt.split()[1:4] == list(str(ex.meta["a"]).zfill(3))
        wrong = str(ex.meta["sum"] + 1).zfill(4)
        assert not add.score(ex, " ".join(wrong))
        if ex.meta["sum"] < 1000:
            assert not add.score(ex, " ".join(str(ex.meta["sum"])))  # unpadded: wrong length
    train = add.examples("train", 500)
    assert sum(e.meta["carries"] > 0 for e in train) > 150  # carries are common
    hand = Example("x", "addition", "<addition> 9 9 9 + 0 0 1 =", "1 0 0 0", {})
    assert add.score(hand, "1 0 0 0")


def test_the_headline_draw_counts_its_repeats():
    """Items are drawn with replacement from a task's test instances (`Task.examples`): the
    README's headline draw (1000 items, seed 0) repeats 17 permutation prompts and no sudoku4 one."""
    distinct = {name: len({e.prompt for e in get_task(name).examples("test", 1000, seed=0)})
                for name in ("sudoku4", "permutation")}
    assert distinct == {"sudoku4": 1000, "permutation": 983}


def test_an_argument_a_task_does_not_take_is_named():
    from depmask.tasks import get_benchmark

    with pytest.raises(ValueError, match=r"task 'sort' takes no argument 'x' \(from `task_kwargs`\); its arguments: n, test_fraction"):
        get_task("sort", x=1)
    with pytest.raises(ValueError, match=r"task 'gsm8k' takes no argument 'pth' .*its arguments: path, shots"):
        get_benchmark("gsm8k", pth="/data")
    assert get_task("addition", digits=2).digits == 2


@pytest.mark.parametrize("name, kwargs, message", [
    ("addition", {"digits": "3"}, r"`digits` \('3'\) must be an integer, not str"),
    ("addition", {"digits": 2.5}, r"`digits` \(2.5\) must be an integer, not float"),
    ("addition", {"digits": True}, r"`digits` \(True\) must be an integer, not bool"),
    ("sort", {"n": "8"}, r"`n` \('8'\) must be an integer"),
    ("permutation", {"n_symbols": 3.5}, r"`n_symbols` \(3.5\) must be an integer"),
    ("permutation", {"n_symbols": 27}, r"`n_symbols` \(27\) must lie in \[1, 26\]"),
    ("sudoku4", {"min_givens": 4.5}, r"`min_givens` \(4.5\) must be an integer"),
    ("sort", {"test_fraction": "0.1"}, r"`test_fraction` \('0.1'\) must be a number in \(0, 1\)"),
])
def test_task_sizes_of_the_wrong_type_are_named_when_the_task_is_built(name, kwargs, message):
    """From a config they reached generation (`random.randrange` on 4.5, after the model loaded)."""
    with pytest.raises(ValueError, match=message):
        get_task(name, **kwargs)


def test_a_task_whose_symbols_the_tokenizer_lacks_is_refused():
    """`permutation` with 12 letters on the embedded model (8 letters) decoded `[UNK]` prompts and
    graded 10 %, with no warning."""
    from transformers import AutoTokenizer

    from depmask.tasks.adapter import TaskAdapter
    from tests.conftest import EMBEDDED

    tok = AutoTokenizer.from_pretrained(str(EMBEDDED))
    fine = TaskAdapter.build("permutation")
    example = fine.examples("test", 1, 0)[0]
    assert tok.unk_token_id not in fine.prompt_ids(example, tok)
    wide = TaskAdapter.build("permutation", n_symbols=12)
    with pytest.raises(ValueError, match=r"task 'permutation' .*uses 4 symbol\(s\) the model's tokenizer does not have: i j k l"):
        wide.prompt_ids(wide.examples("test", 1, 0)[0], tok)


def test_numpy_numbers_are_numbers():
    """The type checks added on 2026-11-30 refused `np.int64(8)` (a sweep over `np.arange`)."""
    import numpy as np

    assert get_task("sort", n=np.int64(6)).n == 6 and type(get_task("sort", n=np.int64(6)).n) is int
    assert get_task("sudoku4", min_givens=np.int32(5)).min_givens == 5
    assert get_task("addition", test_fraction=np.float32(0.25)).test_fraction == np.float32(0.25)


def test_task_kwargs_may_not_move_instances_between_the_splits():
    """`test_fraction` from `task_kwargs` moved training instances of the embedded model into the
    test split (812 of 1000 test items at 0.5) with no warning."""
    from depmask.tasks.adapter import TaskAdapter

    with pytest.raises(ValueError, match=r"task 'sudoku4': `test_fraction` \(0.5\) in `task_kwargs` would move"):
        TaskAdapter.build("sudoku4", test_fraction=0.5)
    assert TaskAdapter.build("sudoku4", test_fraction=0.1).task.test_fraction == 0.1  # the default: the same task
    assert get_task("sudoku4", test_fraction=0.5).test_fraction == 0.5  # the library's own use stays open


def test_a_gen_length_shorter_than_a_generated_answer_is_refused():
    """`--gen_length 8` on sudoku4 (16-token answers) decoded and graded every item wrong."""
    from depmask.data_gen import HarvestConfig
    from depmask.data_gen.prompts import item_lengths
    from depmask.eval.runner import check_tasks
    from depmask.tasks.adapter import TaskAdapter

    with pytest.raises(ValueError, match=r"task 'sudoku4': `gen_length` \(8\) is shorter than its answer \(16 tokens\)"):
        check_tasks(["sudoku4"], None, gen_length=8, block_length=8)
    check_tasks(["sudoku4"], None, gen_length=32, block_length=16)  # longer: the answer, then EOS / padding
    cfg = HarvestConfig(model="m", output="o", tasks=["sudoku4"], gen_length=12, block_length=4)
    with pytest.raises(ValueError, match=r"`gen_length` \(12\) is shorter than its answer"):
        item_lengths(cfg, TaskAdapter.build("sudoku4"))


def test_the_draw_digest_tells_draws_under_other_task_arguments_apart():
    """Ids are `task:split:seed:index` whatever the arguments: the digest (ids only) called draws
    of other instances the same items, and `head_tradeoff` passed them."""
    from depmask.eval.draws import draw_digest

    a = get_task("sudoku4").examples("test", 20, seed=0)
    b = get_task("sudoku4", min_givens=8).examples("test", 20, seed=0)
    assert [e.id for e in a] == [e.id for e in b] and draw_digest(a) != draw_digest(b)
    assert draw_digest(a) == draw_digest(list(reversed(a)))
