"""Which items `depmask eval decode` decodes, with which noise and lengths, in which batches, and
which stored rows it reuses."""

import json

import pytest

from depmask.cli import main
from depmask.eval.draws import task_prompts
from depmask.eval.items import read_items
from depmask.eval.runner import PolicySweep, run_decode_eval
from depmask.models import HFDenoiser
from tests.conftest import EMBEDDED


def test_excluded_prompts_leave_the_draw(tmp_path):
    den = HFDenoiser.from_pretrained(EMBEDDED)
    drawn = task_prompts(["sort"], "test", 4, 0)["sort"]
    keep = sorted(drawn)[0]
    rows = run_decode_eval(den, ["sort"], [PolicySweep("low_confidence")], tmp_path / "a", n=4,
                           exclude={"sort": drawn - {keep}})
    assert rows[0]["n"] == 1
    with pytest.raises(ValueError, match=r"task 'sort': every item of the draw \(split 'test', seed 0\) is an excluded"):
        run_decode_eval(den, ["sort"], [PolicySweep("low_confidence")], tmp_path / "b", n=4, exclude={"sort": drawn})
    with pytest.raises(ValueError, match=r"`n` \(0\) must be an int >= 1"):
        run_decode_eval(den, ["sort"], [PolicySweep("low_confidence")], tmp_path / "c", n=0)
    assert not (tmp_path / "c").exists()


def test_sampled_batches_draw_their_own_noise(tmp_path):
    """At temperature > 0 each batch seeds its sampler from (seed, its first item): two batches
    holding the same prompt sample it independently (one seed for all batches gave row 0 of
    every batch the same noise, so they always agreed), and the same run again samples the same."""
    from dataclasses import replace

    from depmask.decoding import batch_seed
    from depmask.eval.runner import run_one
    from depmask.tasks.adapter import TaskAdapter

    den = HFDenoiser.from_pretrained(EMBEDDED)
    adapter = TaskAdapter.build("permutation")
    ex = adapter.examples("test", 1, 0)[0]
    copies = [replace(ex, id=f"copy-{i}") for i in range(6)]  # one prompt, six batches of one

    def completions(name):
        run_one(den, adapter, "low_confidence", {}, copies, tmp_path / f"{name}.jsonl", batch_size=1,
                temperature=3.0, gen_length=6, block_length=6, steps=6, seed=0)
        return [r["completion"] for r in read_items(tmp_path / f"{name}.jsonl")]

    first = completions("a")
    assert len(set(first)) > 1, first
    assert completions("b") == first
    assert batch_seed(0, "copy-0") != batch_seed(0, "copy-1") != batch_seed(1, "copy-1")
    assert 0 <= batch_seed(0, "copy-0") < 2**63


def test_another_gen_length_keeps_the_tasks_block(tmp_path):
    """`--gen_length` alone keeps the task's block, as documented (it used to switch to one block
    of gen_length, so semi-autoregressive decoding silently became a single block); a gen_length
    the block does not divide is refused, pointing at `--block_length`."""
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": "Sam has 3 pens.", "answer": "#### 3"}) + "\n")
    task_kwargs = {"gsm8k": {"path": str(data), "shots": 0, "block_length": 16}}  # its own gen_length: 256

    den = HFDenoiser.from_pretrained(EMBEDDED)
    run_decode_eval(den, ["gsm8k"], [PolicySweep("low_confidence")], tmp_path / "a", n=1, gen_length=32,
                    task_kwargs=task_kwargs)
    (run,) = json.loads((tmp_path / "a" / "runs.json").read_text()).values()
    assert (run["gen_length"], run["block_length"]) == (32, 16)
    with pytest.raises(ValueError, match=r"task 'gsm8k': `block_length` \(16\) must be >= 1 and divide "
                                         r"`gen_length` \(40\) \(the task's block; give --block_length"):
        run_decode_eval(den, ["gsm8k"], [PolicySweep("low_confidence")], tmp_path / "b", n=1, gen_length=40,
                        task_kwargs=task_kwargs)


def test_random_remasking_is_seeded_at_temperature_zero(tmp_path):
    # `random` draws its positions from the decode's generator; at T = 0 none was made and the
    # draw came from torch's global generator: two runs of one command decoded differently
    import torch

    from depmask.eval.items import read_items

    den = HFDenoiser.from_pretrained(EMBEDDED)
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        torch.manual_seed(len(runs) + 100)  # whatever the global generator holds
        run_decode_eval(den, ["sort"], [PolicySweep("random")], tmp_path / name, n=6, batch_size=3, seed=seed)
        (path,) = (tmp_path / name / "items" / "sort").glob("*.jsonl")
        runs.append({r["id"]: r["commit_step"] for r in read_items(path)})
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]  # the seed decides the draw


def test_benchmark_items_are_batched_by_prompt_length(tmp_path, monkeypatch):
    # in draw order, one long prompt padded a whole batch of short ones; sorted, rows of a batch
    # have close lengths (synthetic tasks, all of one length, keep the draw's order)
    import depmask.eval.runner as runner

    data = tmp_path / "gsm8k.jsonl"
    questions = ["Sam has 3 pens. " * k for k in (1, 6, 2, 5, 3, 4)]
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 3"}) + "\n" for q in questions))
    widths = []
    real = runner.generate

    def spy(den, prompts, policy, **kwargs):
        widths.append([len(p) for p in prompts])
        return real(den, prompts, policy, **kwargs)

    monkeypatch.setattr(runner, "generate", spy)
    den = HFDenoiser.from_pretrained(EMBEDDED)
    rows = run_decode_eval(den, ["gsm8k"], [PolicySweep("low_confidence")], tmp_path / "a", n=6, batch_size=2,
                           task_kwargs={"gsm8k": {"path": str(data), "shots": 0, "gen_length": 16,
                                                  "block_length": 16}})
    assert rows[0]["n"] == 6 and len(widths) == 3
    flat = [w for batch in widths for w in batch]
    assert flat == sorted(flat)


def test_results_decoded_from_other_prompts_are_not_reused(tmp_path):
    """A benchmark's ids are record indices: after its data file changed at the same path, the old
    completions were reused and graded against the old answers."""
    data = tmp_path / "gsm.jsonl"

    def write(offset):
        data.write_text("".join(json.dumps({"question": f"{i + offset} + 1?", "answer": f"#### {i + offset + 1}"}) + "\n"
                                for i in range(3)))

    args = ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[gsm8k]", "--n", "3", "--gen_length", "8", "--block_length", "8",
            "--task_kwargs", json.dumps({"gsm8k": {"path": str(data), "shots": 0}}), "--bootstrap", "0",
            "--policies", "[{name: low_confidence}]", "--output", str(tmp_path / "ev")]
    write(0)
    main(args)
    main(args)  # the same data: resumed
    write(10)
    with pytest.raises(ValueError, match=r"holds results for 3 item\(s\) .* whose prompt or answer is not what it is now"):
        main(args)


def test_a_bad_line_inside_a_results_file_costs_only_itself(tmp_path):
    """`read_items` stopped at the first unparsable line anywhere and cut the file there: every
    complete row after it was deleted without a word and decoded again."""
    import json

    from depmask.eval.items import read_items

    path = tmp_path / "r.jsonl"
    rows = [{"id": f"t:{i}", "correct": True} for i in range(5)]
    lines = [json.dumps(r) + "\n" for r in rows]
    lines[1] = '{"id": "t:1", "corr' + lines[2]  # a torn line that the next append continued
    del lines[2]
    path.write_text("".join(lines) + '{"id": "t:5"')  # and a torn last line
    with pytest.warns(UserWarning, match=r"r\.jsonl: skipped 1 line\(s\) that are not JSON rows \(line\(s\) 2\)"):
        got = read_items(path)
    assert [r["id"] for r in got] == ["t:0", "t:3", "t:4"]
    assert path.read_text().endswith(json.dumps(rows[4]) + "\n")  # the complete rows stay; the torn tail is cut
