"""Harvest on the embedded model: trajectories unchanged, records exact, sudoku structure visible."""

import json

import numpy as np
import pytest
import torch

from depmask.data_gen import HarvestConfig, Recorder, build_items, group_items, harvest_group
from depmask.data_gen.dataset import load_harvest
from depmask.data_gen.prompts import choose_steps, parse_policy
from depmask.decoding import build_policy, generate
from depmask.decoding.influence import (
    denoiser_forward,
    gather_positions,
    pairwise_influence,
    top_values,
)
from depmask.decoding.sampling import batch_seed
from depmask.train.harvest import run_harvest
from tests.conftest import EMBEDDED
from tests.data_gen.harvest_inputs import QUIET, _gsm8k_file, _items


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


def test_a_left_padded_group_records_positions_and_influences_of_its_own_canvas(embedded, tmp_path):
    """Every synthetic group has one prompt length, so no test padded a row: a recorder that kept
    the padded positions or tokens wrote states whose positions miss the masked tokens."""
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"id": f"q{i}", "prompt": p})
                                                for i, p in enumerate(["3 1 2", "4 2 1 3 5 6 7", "1 2"])))
    cfg = HarvestConfig(model=str(EMBEDDED), prompts_file=str(tmp_path / "p.jsonl"), gen_length=8,
                        states_per_example=2, batch_size=3)
    (group,) = group_items(build_items(cfg, embedded.tokenizer), 3)
    assert len({len(it.prompt_ids) for it in group}) == 3  # three widths: two rows are padded
    res = harvest_group(embedded, group, cfg, embedded.tokenizer.pad_token_id)
    assert len(res.records) == 6
    for r in res.records:
        tokens = torch.as_tensor(r.tokens, dtype=torch.long)[None]  # [1, prompt + g], no padding
        pos = torch.as_tensor(r.positions, dtype=torch.long)[None]
        assert tokens.shape[1] == r.prompt_length + 8 and bool((tokens[0, pos[0]] == embedded.mask_id).all())
        base = torch.log_softmax(gather_positions(embedded(tokens).logits, pos), -1)
        inf = pairwise_influence(denoiser_forward(embedded), tokens, pos, torch.ones_like(pos, dtype=torch.bool), base,
                                 torch.as_tensor(r.candidate)[None, :, None].long())
        np.testing.assert_allclose(r.tv, inf.tv[0].numpy(), atol=1e-4)


def test_a_sampled_harvest_records_the_trajectory_it_planned(embedded):
    """At temperature > 0 the states are chosen among the forwards of a first decode and recorded
    in a second: both passes must sample alike (the same seed), or the recorded trajectory is
    another one, and a resume or another rank harvests other data."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=6, states_per_example=3,
                         policies=["threshold:threshold=0.7"], batch_size=6, temperature=1.0)
    runs = []
    for _ in range(2):
        torch.manual_seed(len(runs))  # the global generator differs between the runs: it must not matter
        res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
        runs.append([(r.example_id, r.step, r.tokens.tolist(), r.candidate.tolist()) for r in res.records])
    assert runs[0] == runs[1]
    plain = generate(embedded, [it.prompt_ids for it in groups[0]], build_policy("threshold", threshold=0.7),
                     gen_length=16, steps=16, temperature=1.0, pad_id=embedded.tokenizer.pad_token_id,
                     generator=torch.Generator().manual_seed(batch_seed(cfg.seed, groups[0][0].example_id)))
    steps = {}
    for eid, step, *_ in runs[0]:
        steps.setdefault(eid, []).append(step)
    assert steps == {it.example_id: choose_steps(cfg.seed, it.example_id, int(n), 3)
                     for it, n in zip(groups[0], plain.nfe)}
