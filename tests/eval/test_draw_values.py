"""Values the evaluation keeps per item and per draw: the item digest (prompt and answer), the
draw digest (id, prompt and answer of every item, order-free) and the per-item seconds of a batch."""

import itertools
from types import SimpleNamespace

import pytest

from depmask.eval.draws import check_items, draw_digest, item_digest
from depmask.eval.items import read_items
from depmask.eval.runner import run_one
from depmask.models import HFDenoiser
from depmask.tasks.adapter import TaskAdapter
from depmask.tasks.base import Example
from tests.conftest import EMBEDDED


def _ex(i, prompt, answer):
    return Example(id=f"t:test:0:{i}", task="t", prompt=prompt, answer=answer)


def test_an_items_digest_changes_with_its_answer_and_stale_rows_are_refused(tmp_path):
    """A benchmark item whose answer was corrected at the same id (same prompt) must not have its
    old verdict reused: the item digest covers the answer, not only the prompt."""
    old, new = _ex(0, "2 + 2 ?", "4"), _ex(0, "2 + 2 ?", "5")
    assert item_digest(old) != item_digest(new)
    assert item_digest(old) != item_digest(_ex(0, "2 + 3 ?", "4"))
    assert item_digest(old) == item_digest(_ex(7, "2 + 2 ?", "4"))  # the id is not part of it
    rows = [{"id": old.id, "item": item_digest(old), "completion": "4", "correct": True}]
    check_items(tmp_path / "r.jsonl", rows, [old])  # the same item: accepted
    with pytest.raises(ValueError, match=r"holds results for 1 item\(s\) \(e.g. 't:test:0:0'\)"):
        check_items(tmp_path / "r.jsonl", rows, [new])


def test_a_draws_digest_covers_every_items_id_prompt_and_answer_in_any_order():
    """Two runs are compared only when their draw digests agree: a draw whose prompts differ
    (other task arguments, same ids and answers) must not pass for the same draw."""
    a = [_ex(0, "p0", "a0"), _ex(1, "p1", "a1")]
    base = draw_digest(a)
    assert draw_digest(list(reversed(a))) == base
    assert draw_digest([_ex(0, "p0 x", "a0"), a[1]]) != base  # prompt
    assert draw_digest([_ex(0, "p0", "a0 x"), a[1]]) != base  # answer
    assert draw_digest([_ex(2, "p0", "a0"), a[1]]) != base  # id
    assert draw_digest(a[:1]) != base


def test_each_items_seconds_is_its_batchs_time_shared_by_its_items(tmp_path, monkeypatch):
    """`seconds` per item is the batch's wall time divided by the items in it, so that a run's
    summed seconds (and tokens/s) is its wall time, whatever the batch size. Each timed batch
    takes 6 s on a fake clock; batches of 3 give 2 s an item and 12 s for the run of 6."""
    import depmask.eval.runner as runner

    ticks = itertools.count(0.0, 6.0)
    monkeypatch.setattr(runner, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    den = HFDenoiser.from_pretrained(EMBEDDED)
    adapter = TaskAdapter.build("permutation")
    examples = adapter.examples("test", 6, 0)
    path = tmp_path / "run.jsonl"
    row = run_one(den, adapter, "low_confidence", {}, examples, path, batch_size=3, temperature=0.0,
                  gen_length=6, block_length=6, steps=6, seed=0)
    items = read_items(path)
    assert [r["seconds"] for r in items] == [2.0] * 6
    assert row["seconds"] == pytest.approx(12.0)
    assert row["tokens_per_s"] == pytest.approx(sum(r["committed"] for r in items) / 12.0)


def test_a_runs_summary_is_over_this_draw_not_every_row_its_file_holds(tmp_path):
    """A results file reused by a smaller draw (`--n 3` after `--n 6`, the same run) holds rows of
    items outside this draw: the summary row and the kept items are over the 3 drawn, not the 6."""
    den = HFDenoiser.from_pretrained(EMBEDDED)
    adapter = TaskAdapter.build("permutation")
    six = adapter.examples("test", 6, 0)
    path = tmp_path / "run.jsonl"
    kw = dict(batch_size=6, temperature=0.0, gen_length=6, block_length=6, steps=6, seed=0)
    assert run_one(den, adapter, "low_confidence", {}, six, path, **kw)["n"] == 6
    keep = []
    row = run_one(den, adapter, "low_confidence", {}, six[:3], path, keep=keep, **kw)
    assert row["n"] == 3
    assert sorted(r["id"] for r in keep[0]) == sorted(ex.id for ex in six[:3])
    assert len(read_items(path)) == 6  # nothing decoded again


def test_runs_json_counts_the_items_of_each_runs_own_draw(tmp_path):
    """`runs.json` names, per run, how many items its summary is over: the task's draw (2 here),
    not the items of every run of the evaluation (2 runs × 2)."""
    import json

    from depmask.eval.runner import PolicySweep, run_decode_eval

    den = HFDenoiser.from_pretrained(EMBEDDED)
    run_decode_eval(den, ["permutation"], [PolicySweep("threshold", sweep={"threshold": [0.5, 0.9]})],
                    tmp_path / "ev", n=2, gen_length=6, block_length=6)
    index = json.loads((tmp_path / "ev" / "runs.json").read_text())
    assert len(index) == 2
    assert [v["items"] for v in index.values()] == [2, 2]


def test_each_row_takes_its_own_counts_from_the_batch_result():
    """A batch's result holds per-row NFE, probe NFE, TPF, AFP and τ: row i must take entry i of
    each (a probing policy's rows spend different probe forwards), NaN AFP / τ become None and the
    batch's seconds are shared out."""
    import torch

    from depmask.eval.runner import _row_items

    res = SimpleNamespace(nfe=torch.tensor([10, 12]), probe_nfe=torch.tensor([5, 9]),
                          tpf=lambda: torch.tensor([1.5, 2.0]), afp=lambda: torch.tensor([float("nan"), 0.25]),
                          kendall_tau=lambda: torch.tensor([0.5, float("nan")]),
                          commit_step=torch.tensor([[0, 1], [1, 1]]))
    exs = [_ex(0, "p0", "a0"), _ex(1, "p1", "a1")]
    rows = _row_items(res, 2, [2, 2], 3.0, exs, ["a0", "x"], [True, False], "g")
    assert [(r["nfe"], r["probe_nfe"]) for r in rows] == [(10, 5), (12, 9)]
    assert [(r["tpf"], r["afp"], r["kendall_tau"]) for r in rows] == [(1.5, None, 0.5), (2.0, 0.25, None)]
    assert [r["seconds"] for r in rows] == [1.5, 1.5]
    assert [r["commit_step"] for r in rows] == [[0, 1], [1, 1]]
    assert [(r["id"], r["correct"], r["item"]) for r in rows] == [(e.id, ok, item_digest(e)) for e, ok in zip(exs, (True, False))]


def test_a_sampled_batch_is_seeded_from_its_first_item(tmp_path):
    """At temperature > 0 a batch's generator is seeded with `batch_seed(seed, id of its first
    item)` (documented in `batch_seed`): the same batch decoded by hand with that seed gives the
    same completions; another item's id (e.g. the last) seeds other noise."""
    import torch

    from depmask.decoding import batch_seed, build_policy, generate

    den = HFDenoiser.from_pretrained(EMBEDDED)
    adapter = TaskAdapter.build("permutation")
    exs = adapter.examples("test", 3, 0)
    run_one(den, adapter, "low_confidence", {}, exs, tmp_path / "r.jsonl", batch_size=3, temperature=3.0,
            gen_length=6, block_length=6, steps=6, seed=5)
    got = {r["id"]: r["completion"] for r in read_items(tmp_path / "r.jsonl")}
    tok = den.tokenizer

    def by_hand(first_id):
        gen = torch.Generator().manual_seed(batch_seed(5, first_id))
        res = generate(den, [adapter.prompt_ids(ex, tok) for ex in exs], build_policy("low_confidence"),
                       gen_length=6, block_length=6, steps=6, temperature=3.0, generator=gen,
                       pad_id=getattr(tok, "pad_token_id", None))
        return [adapter.completion(r, tok, den.eos_ids) for r in res.generated.tolist()]

    assert [got[ex.id] for ex in exs] == by_hand(exs[0].id)
    assert by_hand(exs[-1].id) != by_hand(exs[0].id)
