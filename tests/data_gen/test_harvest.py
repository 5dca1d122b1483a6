"""Harvest on the embedded model: trajectories unchanged, records exact, sudoku structure visible."""

import json

import numpy as np
import pytest
import torch

from depmask.data_gen import HarvestConfig, Recorder, build_items, group_items, harvest_group
from depmask.data_gen.dataset import load_harvest
from depmask.data_gen.prompts import choose_steps, parse_policy
from depmask.data_gen.verify import verify_harvest
from depmask.decoding import build_policy, generate
from depmask.decoding.influence import (
    denoiser_forward,
    gather_positions,
    pairwise_influence,
    top_values,
)
from depmask.train.harvest import run_harvest
from tests.conftest import EMBEDDED

QUIET = {"accelerator": "cpu"}


def _items(embedded, **kw):
    cfg = HarvestConfig(model=str(EMBEDDED), **kw)
    return cfg, group_items(build_items(cfg, embedded.tokenizer), cfg.batch_size)


def test_recorder_does_not_change_the_trajectory(embedded):
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=6, states_per_example=None)
    items = groups[0]
    prompts = [it.prompt_ids for it in items]
    plain = generate(embedded, prompts, build_policy("threshold", threshold=0.7), gen_length=16)
    keep = torch.ones(len(items), 16, dtype=torch.bool)
    meta = [{"example_id": it.example_id, "task": it.task, "policy": "threshold", "fingerprint": "x",
             "prompt_length": len(it.prompt_ids)} for it in items]
    rec = Recorder(build_policy("threshold", threshold=0.7), keep, [0] * len(items), meta, embedded.mask_id)
    recorded = generate(embedded, prompts, rec, gen_length=16)
    assert torch.equal(plain.tokens, recorded.tokens)
    assert len(rec.records) == int(plain.nfe.sum())  # one state per forward of each row
    assert int(recorded.probe_nfe.sum()) > 0 and torch.equal(recorded.nfe - recorded.probe_nfe, plain.nfe)


def test_a_parallel_trajectory_keeps_its_states_among_the_forwards_it_takes(embedded):
    """`threshold` finishes a sudoku4 in a few forwards: each example keeps min(states, forwards)
    states, chosen among those forwards (among 16 forward indices, as before 2026-11-30, most
    states fell after the trajectory's end and were never recorded)."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=12, states_per_example=3,
                         policies=["threshold:threshold=0.7"], batch_size=12)
    group = groups[0]
    lengths = generate(embedded, [it.prompt_ids for it in group], build_policy("threshold", threshold=0.7),
                       gen_length=16, pad_id=embedded.tokenizer.pad_token_id).nfe.tolist()
    assert max(lengths) < 16 and min(lengths) < 3  # short trajectories, some shorter than 3
    res = harvest_group(embedded, group, cfg, embedded.tokenizer.pad_token_id)
    by_example = {}
    for r in res.records:
        by_example.setdefault(r.example_id, []).append(r.step)
    assert by_example == {it.example_id: choose_steps(cfg.seed, it.example_id, n, 3) for it, n in zip(group, lengths)}
    assert len(res.records) == sum(min(3, n) for n in lengths)
    old_choice = sum(sum(t < n for t in choose_steps(cfg.seed, it.example_id, 16, 3)) for it, n in zip(group, lengths))
    assert len(res.records) > old_choice


def test_kept_states_and_records_are_exact(embedded):
    cfg, groups = _items(embedded, tasks=["sudoku4", "permutation"], examples_per_task=4, states_per_example=3,
                         batch_size=8)
    for group in groups:
        res = harvest_group(embedded, group, cfg, embedded.tokenizer.pad_token_id)
        by_example = {}
        for r in res.records:
            by_example.setdefault(r.example_id, []).append(r.step)
        assert by_example == {it.example_id: choose_steps(cfg.seed, it.example_id, it.gen_length, 3) for it in group}
        for r in res.records[:6]:
            tokens = torch.as_tensor(r.tokens, dtype=torch.long)[None]
            pos = torch.as_tensor(r.positions, dtype=torch.long)[None]
            assert (tokens[0, pos[0]] == embedded.mask_id).all()
            out = embedded(tokens, need_hidden=True, need_attention=True)
            base = torch.log_softmax(gather_positions(out.logits, pos), -1)
            cand = torch.as_tensor(r.candidate, dtype=torch.long)
            assert torch.equal(cand, base[0].index_fill(-1, torch.tensor([embedded.mask_id]), -1e9).argmax(-1))
            np.testing.assert_allclose(r.confidence, base[0].exp().gather(1, cand[:, None])[:, 0], atol=1e-5)
            entropy = -(base[0].exp() * base[0]).sum(-1)  # a head input: it must be the model's
            np.testing.assert_allclose(r.entropy, entropy.numpy(), atol=1e-4)
            np.testing.assert_allclose(r.hidden, gather_positions(out.hidden, pos)[0].half().numpy(), atol=2e-3)
            att = out.attention[0][pos[0]][:, pos[0]]
            np.testing.assert_allclose(r.attention, att.numpy(), atol=1e-5)
            valid = torch.ones_like(pos, dtype=torch.bool)
            inf = pairwise_influence(denoiser_forward(embedded), tokens, pos, valid, base, cand[None, :, None])
            np.testing.assert_allclose(r.tv, inf.tv[0].numpy(), atol=1e-4)
            np.testing.assert_allclose(r.kl, inf.kl[0].numpy(), atol=1e-3, rtol=1e-3)
            assert r.committed.sum() == 1  # low_confidence commits one per step: its most confident slot
            assert r.committed[int(np.argmax(r.confidence))]


def test_sudoku_constraints_carry_more_influence(embedded):
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=48, states_per_example=None, batch_size=48)
    records = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id).records
    related, unrelated = [], []
    for r in records:
        cells = r.positions - r.prompt_length  # answer index = cell index (row-major 4×4)
        for a, i in enumerate(cells):
            for b, j in enumerate(cells):
                if a == b:
                    continue
                same = i // 4 == j // 4 or i % 4 == j % 4 or (i // 8 == j // 8 and (i % 4) // 2 == (j % 4) // 2)
                (related if same else unrelated).append(r.tv[a, b])
    rel, unrel = float(np.mean(related)), float(np.mean(unrelated))
    print(f"\nsudoku4 mean TV influence: same row/column/box {rel:.4f} ({len(related)} pairs), "
          f"unrelated {unrel:.4f} ({len(unrelated)} pairs), ratio {rel / unrel:.2f}")
    assert rel > 1.5 * unrel


def test_topk_expectation_and_policy_mix(embedded):
    cfg, groups = _items(embedded, tasks=["permutation"], examples_per_task=8, states_per_example=2, topk=3,
                         policies=["low_confidence", "threshold:threshold=0.6"], batch_size=8)
    assert {g[0].policy for g in groups} == {"low_confidence", "threshold:threshold=0.6"}
    for g in groups:
        res = harvest_group(embedded, g, cfg, embedded.tokenizer.pad_token_id)
        assert all(r.policy == g[0].policy for r in res.records)
        assert all((r.tv >= 0).all() and (r.tv <= 1).all() for r in res.records)
        for r in res.records[:3]:  # the expectation over each position's top 3 values, recomputed
            tokens = torch.as_tensor(r.tokens, dtype=torch.long)[None]
            pos = torch.as_tensor(r.positions, dtype=torch.long)[None]
            base = torch.log_softmax(gather_positions(embedded(tokens).logits, pos), -1)
            values, weights = top_values(base, 3, forbid=embedded.mask_id)
            inf = pairwise_influence(denoiser_forward(embedded), tokens, pos, torch.ones_like(pos, dtype=torch.bool),
                                     base, values, weights)
            np.testing.assert_allclose(r.tv, inf.tv[0].numpy(), atol=1e-4)
    assert parse_policy("threshold:threshold=0.6,x=a") == ("threshold", {"threshold": 0.6, "x": "a"})
    with pytest.raises(ValueError, match="name=value"):
        parse_policy("threshold:0.6")


def test_on_policy_trajectories_of_a_learned_head(embedded, tmp_path):
    """A harvest can follow `demask` itself (DAgger-style data); the recorder binds the wrapped
    policy, so a head trained for another model is refused before the first forward."""
    from depmask.predictor import DependencyHead

    torch.manual_seed(0)
    ours = DependencyHead(embedded.hidden_size, dim=16, layers=0, base_fingerprint=embedded.fingerprint)
    ours.save_pretrained(tmp_path / "ours")
    spec = f"demask:head={tmp_path / 'ours'},epsilon=0.5"
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=4, states_per_example=2, policies=[spec])
    res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
    assert res.records and all(r.policy == spec for r in res.records)
    DependencyHead(embedded.hidden_size, dim=16, layers=0, base_fingerprint="other@local:1").save_pretrained(
        tmp_path / "foreign")
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=4, states_per_example=2,
                         policies=[f"demask:head={tmp_path / 'foreign'}"])
    with pytest.raises(ValueError, match="other@local:1"):
        harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)


def test_a_probing_trajectory_keeps_its_states_among_its_decoding_steps(embedded):
    """`oracle`'s nfe counts its probe forwards; states were drawn among nfe indices, past the
    recorder's steps (one per selection): IndexError, or states silently never recorded."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=6, states_per_example=3,
                         policies=["oracle:epsilon=0.5"], batch_size=6)
    group = groups[0]
    plain = generate(embedded, [it.prompt_ids for it in group], build_policy("oracle", epsilon=0.5),
                     gen_length=16, pad_id=embedded.tokenizer.pad_token_id)
    steps = (plain.nfe - plain.probe_nfe).tolist()
    assert max(plain.nfe.tolist()) > 16 > max(steps)  # the probes push nfe past the canvas
    res = harvest_group(embedded, group, cfg, embedded.tokenizer.pad_token_id)
    by_example = {}
    for r in res.records:
        by_example.setdefault(r.example_id, []).append(r.step)
    assert by_example == {it.example_id: choose_steps(cfg.seed, it.example_id, n, 3) for it, n in zip(group, steps)}


def test_run_harvest_resume_and_identity(embedded, tmp_path):
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"], examples_per_task=12,
                        states_per_example=2, batch_size=4)
    first = run_harvest(cfg, QUIET)
    assert first["states"] == 24 and first["total_examples"] == 12 and first["shards"] == 3
    assert verify_harvest(cfg.output).ok
    again = run_harvest(cfg, QUIET)  # nothing left to do
    assert again["skipped_examples"] == 12 and again["states"] == 0 and again["total_rows"] == 24
    ds = load_harvest(cfg.output)
    states = sorted(zip(list(ds["example_id"]), list(ds["step"])))
    assert len(ds) == 24 and len(set(states)) == 24
    del ds  # memory-mapped: the shards are damaged below
    with pytest.raises(ValueError, match=r"config.topk: 1 → 2"):
        run_harvest(HarvestConfig(**{**vars(cfg), "topk": 2}), QUIET)
    # a damaged shard (truncated since) is harvested again on resume; it used to count as done,
    # so `verify` kept failing after the re-run that its message recommends
    shard = sorted((tmp_path / "h" / "shards").glob("shard-*.arrow"))[1]
    shard.write_bytes(shard.read_bytes()[:100])
    assert not verify_harvest(cfg.output).ok
    repaired = run_harvest(cfg, QUIET)
    assert repaired["states"] == 8 and repaired["total_rows"] == 24 and verify_harvest(cfg.output).ok
    again = load_harvest(cfg.output)
    assert sorted(zip(list(again["example_id"]), list(again["step"]))) == states


def test_prompts_file(embedded, tmp_path):
    from depmask.tasks import get_task

    exs = get_task("sudoku4").examples("test", 3)
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"id": e.id, "prompt": e.prompt}) for e in exs))
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), prompts_file=str(path), gen_length=16,
                        states_per_example=1)
    summary = run_harvest(cfg, QUIET)
    assert summary["total_rows"] == 3
    assert set(load_harvest(cfg.output)["example_id"]) == {e.id for e in exs}


def test_prompts_file_texts_in_the_chat_template(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"id": "p0", "prompt": "3 1"}) + "\n")
    tok = AutoTokenizer.from_pretrained(EMBEDDED, trust_remote_code=True)
    tok.chat_template = "{% for m in messages %}[EOS] {{ m['content'] }} |{% endfor %}{% if add_generation_prompt %} ={% endif %}"
    as_written = build_items(HarvestConfig(prompts_file=str(path), gen_length=8), tok)
    chat = build_items(HarvestConfig(prompts_file=str(path), gen_length=8, prompts_chat=True), tok)
    assert as_written[0].prompt_ids == tok("3 1", add_special_tokens=False)["input_ids"]
    assert chat[0].prompt_ids == tok("[EOS] 3 1 | =", add_special_tokens=False)["input_ids"]


def test_a_harvest_recorded_before_prompts_chat_is_resumed(tmp_path):
    from depmask.data_gen.harvest import prepare_output

    common = {"model": str(EMBEDDED), "output": str(tmp_path / "h"), "states_per_example": 4,
              "prompts_file": str(tmp_path / "p.jsonl"), "gen_length": 8}
    cfg = HarvestConfig(**common)
    spec = prepare_output(cfg, "m@1", 8, 30, ["a", "b"])
    old = {**spec, "config": {k: v for k, v in spec["config"].items() if k != "prompts_chat"}}
    (tmp_path / "h" / "harvest.json").write_text(json.dumps(old))
    assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"]) == old
    chat = HarvestConfig(**common, prompts_chat=True)
    with pytest.raises(ValueError, match=r"config\.prompts_chat: False → True"):
        prepare_output(chat, "m@1", 8, 30, ["a", "b"])


def test_bad_config_values_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"`topk` \(0\)"):
        HarvestConfig(topk=0)
    with pytest.raises(ValueError, match="gen_length"):
        HarvestConfig(prompts_file="x.jsonl")
    # 0 is not "unset": it used to fall back to the task's answer length
    with pytest.raises(ValueError, match=r"`gen_length` \(0\) must be >= 1 or None"):
        HarvestConfig(gen_length=0)
    with pytest.raises(ValueError, match=r"`block_length` \(0\) must be >= 1 or None"):
        HarvestConfig(block_length=0)
    with pytest.raises(ValueError, match=r"`num_workers` \(-1\) must be >= 0"):
        HarvestConfig(num_workers=-1)
    with pytest.raises(FileNotFoundError, match="prompts_file"):
        build_items(HarvestConfig(prompts_file=str(tmp_path / "none.jsonl"), gen_length=4), None)
    # a policy spec with a typo fails when the config is made, not after the groups before it
    with pytest.raises(ValueError, match=r"`policies` entry 'threshold:tau=0.9': policy 'threshold' has no knob 'tau'"):
        HarvestConfig(policies=["low_confidence", "threshold:tau=0.9"])
    with pytest.raises(ValueError, match=r"`policies` entry 'nosuch': unknown policy 'nosuch'"):
        HarvestConfig(policies=["nosuch"])
    with pytest.raises(FileNotFoundError, match=r"`policies` entry 'demask:head=/nope': head checkpoint directory"):
        HarvestConfig(policies=["demask:head=/nope"])


def _gsm8k_file(path, n=4):
    path.write_text("".join(json.dumps({"question": f"Sam has {i} pens{' and a box' * (i % 3)}. He buys {i + 1}. How many?",
                                        "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"}) + "\n"
                            for i in range(n)))
    return path


def test_benchmark_prompts_are_the_ones_eval_decodes(embedded, tmp_path):
    """A benchmark task harvests its own prompt format (what `depmask eval decode` feeds the model)
    and its canvas (gen_length, block_length); `task_kwargs` reach its constructor."""
    from depmask.tasks import get_benchmark

    data = _gsm8k_file(tmp_path / "gsm8k.jsonl")
    kwargs = {"path": str(data), "shots": 0, "gen_length": 16, "block_length": 8}
    cfg = HarvestConfig(model=str(EMBEDDED), tasks=["gsm8k"], task_kwargs={"gsm8k": kwargs}, examples_per_task=3,
                        states_per_example=2)
    items = build_items(cfg, embedded.tokenizer)
    bench = get_benchmark("gsm8k", **kwargs)
    expected = bench.examples("train", 3, seed=None)  # seed 0: the first problems, as `eval decode` takes them
    assert [it.example_id for it in items] == [e.id for e in expected]
    assert all(it.example_id.startswith("gsm8k:train:") for it in items)
    assert [it.prompt_ids for it in items] == [bench.prompt_ids(e, embedded.tokenizer) for e in expected]
    assert {(it.gen_length, it.block_length) for it in items} == {(16, 8)}
    # the harvest's own canvas fields apply to a benchmark that was not given its own
    plain = {"path": str(data), "shots": 0}
    cfg = HarvestConfig(model=str(EMBEDDED), tasks=["gsm8k"], task_kwargs={"gsm8k": plain}, examples_per_task=3,
                        gen_length=32, block_length=16)
    assert {(it.gen_length, it.block_length) for it in build_items(cfg, embedded.tokenizer)} == {(32, 16)}
    # and one given in both places must agree: the task's own was dropped silently (and recorded
    # among its arguments), as under configs/harvest/llada-gsm8k.yaml's `gen_length: 256`
    cfg = HarvestConfig(model=str(EMBEDDED), tasks=["gsm8k"], task_kwargs={"gsm8k": kwargs}, examples_per_task=3,
                        gen_length=32, block_length=8)
    with pytest.raises(ValueError, match=r"task 'gsm8k': `gen_length` is 16 in its `task_kwargs` but 32 for every "
                                         r"task \(`gen_length`\), which would win silently"):
        build_items(cfg, embedded.tokenizer)
    with pytest.raises(ValueError, match=r"`gen_length` is 16 in its `task_kwargs` but 32"):
        run_harvest(HarvestConfig(**{**vars(cfg), "output": str(tmp_path / "h")}), QUIET)  # before the model loads
    cfg = HarvestConfig(model=str(EMBEDDED), tasks=["gsm8k"], task_kwargs={"gsm8k": kwargs}, examples_per_task=3,
                        gen_length=16, block_length=8)
    assert {(it.gen_length, it.block_length) for it in build_items(cfg, embedded.tokenizer)} == {(16, 8)}
    # another seed draws other problems
    cfg = HarvestConfig(model=str(EMBEDDED), tasks=["gsm8k"], task_kwargs={"gsm8k": kwargs}, examples_per_task=3,
                        seed=1)
    assert [it.example_id for it in build_items(cfg, embedded.tokenizer)] == [
        e.id for e in bench.examples("train", 3, seed=1)]
    # synthetic tasks keep one block of their answer length, or of the canvas asked for
    cfg = HarvestConfig(model=str(EMBEDDED), tasks=["sudoku4"], examples_per_task=2)
    assert {(it.gen_length, it.block_length) for it in build_items(cfg, embedded.tokenizer)} == {(16, 16)}
    cfg = HarvestConfig(model=str(EMBEDDED), tasks=["sudoku4"], examples_per_task=2, gen_length=20)
    assert {(it.gen_length, it.block_length) for it in build_items(cfg, embedded.tokenizer)} == {(20, 20)}


def test_task_names_and_task_kwargs_are_checked(embedded, tmp_path):
    with pytest.raises(ValueError, match=r"`task_kwargs` names \['gsm8k'\], which are not in `tasks`"):
        HarvestConfig(tasks=["sudoku4"], task_kwargs={"gsm8k": {}})
    with pytest.raises(ValueError, match=r"`task_kwargs` .* must map task names to dicts"):
        HarvestConfig(tasks=["gsm8k"], task_kwargs={"gsm8k": 3})
    with pytest.raises(ValueError, match=r"unknown task 'sudoku9'; expected one of .*'sudoku4'.*'gsm8k'"):
        build_items(HarvestConfig(tasks=["sudoku9"]), embedded.tokenizer)
    # harvests made before `task_kwargs` existed keep their identity (and so still resume)
    assert "task_kwargs" not in HarvestConfig().identity()
    assert HarvestConfig(tasks=["gsm8k"], task_kwargs={"gsm8k": {"shots": 0}}).identity()["task_kwargs"] == {
        "gsm8k": {"shots": 0}}


def test_a_harvest_whose_states_were_chosen_the_old_way_is_not_resumed(tmp_path):
    from depmask.data_gen.harvest import STATE_CHOICE, prepare_output

    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), states_per_example=4)
    spec = prepare_output(cfg, "m@1", 8, 30, ["a", "b"])
    assert spec["state_choice"] == STATE_CHOICE
    assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"]) == spec  # the same harvest: resumed
    old = {k: v for k, v in spec.items() if k != "state_choice"}  # harvest.json from before 2026-11-30
    (tmp_path / "h" / "harvest.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"state_choice: None → \"among the trajectory's forwards\""):
        prepare_output(cfg, "m@1", 8, 30, ["a", "b"])
    every = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), states_per_example=None)
    every_old = {**old, "config": every.identity()}
    (tmp_path / "h" / "harvest.json").write_text(json.dumps(every_old))
    assert prepare_output(every, "m@1", 8, 30, ["a", "b"]) == every_old  # every state kept: nothing chosen


def test_a_resume_with_other_prompts_precision_or_without_task_kwargs_is_refused(tmp_path):
    """Example ids (`task:split:seed:i`, or a prompts file's own) do not change with the prompts
    behind them, so `examples_sha256` let a resume mix two data sets: after editing the prompts
    file, after dropping `task_kwargs` (empty ones are not recorded, and only the new config's keys
    were compared), or under another Lightning precision (bf16 moves the influences)."""
    from depmask.data_gen.harvest import items_digest, prepare_output
    from depmask.data_gen.prompts import PromptItem

    items = [PromptItem("a", "t", [1, 2], "low_confidence", 8, 8), PromptItem("b", "t", [3], "low_confidence", 8, 8)]
    edited = [PromptItem("a", "t", [1, 5], "low_confidence", 8, 8), items[1]]
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"],
                        task_kwargs={"sudoku4": {"test_fraction": 0.5}})
    spec = prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(items), precision="32-true")
    assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(list(reversed(items))),
                          precision="32-true") == spec  # the same examples in another order: resumed
    with pytest.raises(ValueError, match=r"items_sha256: '[0-9a-f]{64}' → '[0-9a-f]{64}'"):
        prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(edited), precision="32-true")
    with pytest.raises(ValueError, match=r"precision: '32-true' → 'bf16-mixed'"):
        prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(items), precision="bf16-mixed")
    plain = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"])
    with pytest.raises(ValueError, match=r"config\.task_kwargs: \{'sudoku4': \{'test_fraction': 0\.5\}\} → \{\}"):
        prepare_output(plain, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(items), precision="32-true")
    before = {k: v for k, v in spec.items() if k not in ("items_sha256", "precision", "revision")}  # before 2026-11-30
    (tmp_path / "h" / "harvest.json").write_text(json.dumps(before))
    with pytest.warns(UserWarning, match=r"harvested by depmask revision before 2026-11-30.*captured attention"):
        assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(edited),
                              precision="bf16-mixed") == before  # nothing recorded to compare with


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "validation"}, r"`split` \('validation'\) must be one of train, test"),
    ({"tasks": ["sudoku4", "sudoku4"]}, r"names \['sudoku4'\] more than once"),
    ({"prompts_file": "/nonexistent/prompts.jsonl", "gen_length": 8}, r"`prompts_file` \('/nonexistent/prompts.jsonl'\) does not exist"),
])
def test_the_harvest_refuses_its_inputs_before_the_model_loads(tmp_path, kwargs, message):
    cfg = HarvestConfig(**{"model": str(tmp_path / "no-model"), "output": str(tmp_path / "h"), "tasks": ["sudoku4"],
                           "examples_per_task": 2, **kwargs})
    with pytest.raises(ValueError, match=message):  # the model does not exist: the refusal comes first
        run_harvest(cfg, {"accelerator": "cpu"})


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ["sudoku4"], "block_length": 5}, r"`block_length` \(5\) must be >= 1 and divide `gen_length` \(16\)"),
    ({"tasks": ["sudoku4"], "gen_length": 16, "block_length": 32}, r"`block_length` \(32\) .* `gen_length` \(16\)"),
    ({"prompts_file": "PROMPTS", "gen_length": 12, "block_length": 8}, r"`block_length` \(8\) .* `gen_length` \(12\)"),
])
def test_lengths_are_checked_before_the_model_loads(tmp_path, monkeypatch, kwargs, message):
    import depmask.train.harvest as harvest_module

    def no_load(*args, **kw):
        raise AssertionError("the model loaded before the lengths were checked")

    monkeypatch.setattr(harvest_module.HFDenoiser, "from_pretrained", no_load)
    if kwargs.get("prompts_file") == "PROMPTS":
        (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "3 1"}) + "\n")
        kwargs = {**kwargs, "prompts_file": str(tmp_path / "p.jsonl")}
    with pytest.raises(ValueError, match=message):
        run_harvest(HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), **kwargs), QUIET)


def test_prompts_chat_without_a_template_is_named_before_the_model_loads(tmp_path, monkeypatch):
    import depmask.train.harvest as harvest_module

    def no_load(*args, **kw):
        raise AssertionError("the model loaded first")

    monkeypatch.setattr(harvest_module.HFDenoiser, "from_pretrained", no_load)
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "3 1"}) + "\n")
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), prompts_file=str(tmp_path / "p.jsonl"),
                        gen_length=8, prompts_chat=True)
    with pytest.raises(ValueError, match=r"`prompts_chat` is true but the model's tokenizer has no chat template"):
        run_harvest(cfg, QUIET)


@pytest.mark.parametrize("content, message", [
    ('{"id": "a", "prompt": "x"}\n\n{"id": "b"}\n', r"line 3: `prompt` must be a non-empty string, got None \(fields: \['id'\]\)"),
    ('{"prompt": 5}\n', r"line 1: `prompt` must be a non-empty string, got 5"),
    ('[{"prompt": "x"}]\n', r"line 1 is a list, not an object with a `prompt`"),
    ('"just text"\n', r"line 1 is a str, not an object"),
    ('{"id": 1, "prompt": "x"}\n\n\n{"id": "1", "prompt": "y"}\n', r"line 1 and line 4 have the same id"),
    (b'{"prompt": "caf\xe9"}\n', r"is not UTF-8 text"),
    ("\n\n", r"holds no prompts"),
    ("not json\n", r"line 1 is not JSON"),
])
def test_a_prompts_file_is_checked_row_by_row_before_the_model_loads(tmp_path, monkeypatch, content, message):
    """Only row 0 was looked at, after the model had loaded: a later row's missing `prompt` was a
    raw KeyError, a number the tokenizer's error, an empty file a harvest of nothing."""
    from depmask.models import HFDenoiser

    path = tmp_path / "p.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.setattr(HFDenoiser, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), prompts_file=str(path), gen_length=8)
    with pytest.raises(ValueError, match=message):
        run_harvest(cfg, QUIET)


def test_policy_specs_name_a_repeated_knob_or_entry_and_chat_needs_a_prompts_file():
    with pytest.raises(ValueError, match=r"gives knob 'threshold' twice"):
        HarvestConfig(model="m", output="o", policies=["threshold:threshold=0.9,threshold=0.5"])
    with pytest.raises(ValueError, match=r"entries 'low_confidence' and 'low_confidence' are the same policy"):
        HarvestConfig(model="m", output="o", policies=["low_confidence", "threshold", "low_confidence"])
    # the policy, not its spelling: a knob at its default, a class name (each doubled its share)
    with pytest.raises(ValueError, match=r"entries 'threshold' and 'threshold:threshold=0.9' are the same policy"):
        HarvestConfig(model="m", output="o", policies=["threshold", "threshold:threshold=0.9"])
    with pytest.raises(ValueError, match=r"entries 'low_confidence' and 'LowConfidence' are the same policy"):
        HarvestConfig(model="m", output="o", policies=["low_confidence", "LowConfidence"])
    HarvestConfig(model="m", output="o", policies=["threshold", "threshold:threshold=0.8"])  # two policies
    with pytest.raises(ValueError, match=r"`prompts_chat` applies to a `prompts_file`'s texts"):
        HarvestConfig(model="m", output="o", prompts_chat=True)


def test_half_precision_trainer_settings_harvest_float32_influences(embedded):
    """Under Lightning's `bf16-true` torch's default dtype is bfloat16: the influence accumulators
    were made in it and the first recorded state crashed (`index_put_` dtypes differ)."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=2, states_per_example=1, batch_size=2)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
    finally:
        torch.set_default_dtype(before)
    assert res.records and all(np.asarray(r.tv).dtype == np.float32 for r in res.records)


def test_topk_beyond_the_vocabulary_is_refused_before_any_work(embedded, tmp_path):
    """`top_values` took min(k, vocab): a harvest asked for more values than the model has recorded
    the number asked for, with the expectation over fewer."""
    v = embedded.vocab_size
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"], examples_per_task=2,
                        states_per_example=1, batch_size=2, topk=v)
    with pytest.raises(ValueError, match=rf"`topk` \({v}\) must be at most {v - 1}"):
        run_harvest(cfg, QUIET)
    assert not (tmp_path / "h").exists()


def test_the_probe_budget_counts_a_blocks_positions(embedded, monkeypatch):
    """A state's masked positions are its block's, so the statistics are charged for `block_length`
    positions, not the whole answer (which shrank the chunks by half on LLaDA's 256/32 canvas)."""
    import depmask.data_gen.harvest as harvest_module

    seen = []
    real = harvest_module.chunk_for_budget
    monkeypatch.setattr(harvest_module, "chunk_for_budget", lambda *a, **k: seen.append(k) or real(*a, **k))
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=2, states_per_example=1, gen_length=16,
                         block_length=4)
    harvest_group(embedded, groups[0], cfg, pad_id=0)
    assert seen == [{"positions": 4}]


def test_a_shard_of_another_harvest_under_the_same_name_is_refused_on_resume(tmp_path):
    """Shard names come from example ids: a harvest of the same examples under other settings
    names its shards alike. A copied-in one was taken as done, and the resume's manifest then
    hid it from `verify`."""
    import shutil

    common = dict(model=str(EMBEDDED), tasks=["sudoku4"], examples_per_task=2, states_per_example=1, batch_size=2)
    mine = HarvestConfig(output=str(tmp_path / "a"), **common)
    theirs = HarvestConfig(output=str(tmp_path / "b"), policies=["threshold:threshold=0.7"], **common)
    run_harvest(mine, QUIET)
    run_harvest(theirs, QUIET)
    (shard,) = sorted((tmp_path / "b" / "shards").glob("shard-*"))[:1]
    assert (tmp_path / "a" / "shards" / shard.name).exists()  # the same name
    for p in (tmp_path / "b" / "shards").glob(shard.stem + ".*"):
        shutil.copy(p, tmp_path / "a" / "shards" / p.name)
    with pytest.raises(ValueError, match=rf"holds 1 shard\(s\) written by another harvest .*{shard.stem}"):
        run_harvest(mine, QUIET)
    assert any("written by another harvest" in p for p in verify_harvest(mine.output).problems)
