"""Details of `HarvestConfig` and the `Recorder` that no other test pinned: the identity holds
every field that decides the data (and only those), the defaults a config-less harvest takes,
the checks on `output`, `task_kwargs`, `prompts_file` and the policy specs; and what the recorder
writes per state: its block, its dtypes, matrices cut to its own positions, influence at the
sampled candidate and never at the mask id, and the probe forwards it spends."""

import numpy as np
import pytest
import torch

from depmask.data_gen import HarvestConfig, Recorder, harvest_group
from depmask.data_gen.config import IDENTITY_FIELDS
from depmask.decoding import build_policy, generate
from depmask.decoding.influence import (
    denoiser_forward,
    gather_positions,
    pairwise_influence,
    top_values,
)
from tests.data_gen.harvest_inputs import _items
from tests.decoding.mock import MockDenoiser


def _recomputed(denoiser, r, topk=1):
    """A record's base log-probabilities and TV influence recomputed from its canvas: each column
    fixed to its candidate (`topk` 1), or the expectation over its top-`topk` values but the mask id."""
    tokens = torch.as_tensor(r.tokens, dtype=torch.long)[None]
    pos = torch.as_tensor(r.positions, dtype=torch.long)[None]
    base = torch.log_softmax(gather_positions(denoiser(tokens).logits, pos), -1)
    if topk == 1:
        values, weights = torch.as_tensor(r.candidate, dtype=torch.long)[None, :, None], None
    else:
        values, weights = top_values(base, topk, forbid=denoiser.mask_id)
    inf = pairwise_influence(denoiser_forward(denoiser), tokens, pos, torch.ones_like(pos, dtype=torch.bool), base,
                             values, weights)
    return base, inf.tv[0].numpy()

# --- HarvestConfig --------------------------------------------------------------------------------


def test_the_identity_is_exactly_the_identity_fields():
    cfg = HarvestConfig(model="m", output="o")
    assert set(cfg.identity()) == set(IDENTITY_FIELDS) - {"task_kwargs"}  # empty task_kwargs left out
    with_kwargs = HarvestConfig(model="m", output="o", tasks=["gsm8k"], task_kwargs={"gsm8k": {"shots": 0}})
    assert set(with_kwargs.identity()) == set(IDENTITY_FIELDS)


@pytest.mark.parametrize("change", [
    {"tasks": ["sort"]},
    {"prompts_file": "p.jsonl", "gen_length": 8},
    {"policies": ["threshold:threshold=0.7"]},
    {"block_length": 4},
    {"batch_size": 4},
])
def test_every_field_that_decides_the_states_changes_the_identity(change):
    """A resume compares identities: a field left out would let a harvest resume with other
    examples (`tasks`, `prompts_file`), trajectories (`policies`, `block_length`) or groups
    (`batch_size`: a shard is a batch) than the shards already written."""
    base = HarvestConfig(model="m", output="o").identity()
    changed = HarvestConfig(model="m", output="o", **change).identity()
    for key, value in change.items():
        assert changed[key] == value
    assert changed != base


def test_the_defaults_of_a_harvest_without_a_config():
    # part of the identity: a changed default refuses to resume a harvest started without setting it
    cfg = HarvestConfig()
    assert (cfg.model, cfg.output) == ("models/tiny-tasks", "outputs/harvest/tiny-tasks")
    assert (cfg.tasks, cfg.split, cfg.examples_per_task, cfg.seed) == (["sudoku4", "permutation"], "train", 100, 0)
    assert (cfg.policies, cfg.states_per_example, cfg.temperature, cfg.topk) == (["low_confidence"], 4, 0.0, 1)
    assert (cfg.batch_size, cfg.chunk_size, cfg.memory_budget_mb, cfg.num_workers) == (32, None, 1024, 0)
    assert (cfg.prompts_file, cfg.prompts_chat, cfg.task_kwargs) == (None, False, {})
    assert (cfg.gen_length, cfg.block_length, cfg.dtype, cfg.capture_layers) == (None, None, None, None)


def test_a_prompts_file_under_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = HarvestConfig(model="m", output="o", prompts_file="~/p.jsonl", gen_length=8)
    assert cfg.prompts_file == str(tmp_path / "p.jsonl")


def test_an_empty_output_or_one_that_is_a_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"`output` \(''\) is empty"):
        HarvestConfig(model="m", output="")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"`output` .* is a file"):
        HarvestConfig(model="m", output=str(tmp_path / "f"))
    with pytest.raises(ValueError, match=r"`output` .* lies below a file"):
        HarvestConfig(model="m", output=str(tmp_path / "f" / "h"))


@pytest.mark.parametrize("task_kwargs", [["gsm8k"], "gsm8k", [("gsm8k", {})]])
def test_task_kwargs_that_are_not_a_mapping_are_named(task_kwargs):
    # a YAML list or string reached `.values()` and failed with an AttributeError naming nothing
    with pytest.raises(ValueError, match=r"`task_kwargs` .* must map task names to dicts"):
        HarvestConfig(model="m", output="o", tasks=["gsm8k"], task_kwargs=task_kwargs)


def test_different_policies_without_knobs_are_not_a_repeat():
    # the repeat check compares the policy's class with its knobs: `{}` alone would match both
    cfg = HarvestConfig(model="m", output="o", policies=["low_confidence", "random"])
    assert cfg.policies == ["low_confidence", "random"]


def test_a_malformed_policy_spec_is_named_with_its_entry():
    with pytest.raises(ValueError, match=r"`policies` entry 'threshold:0.6': .*name=value"):
        HarvestConfig(model="m", output="o", policies=["low_confidence", "threshold:0.6"])


# --- the recorder (embedded model) ----------------------------------------------------------------


def test_each_record_names_the_block_its_positions_are_in(embedded):
    """Four blocks of 4 on a 16-token answer: a state's positions lie in the block it records."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=2, states_per_example=None,
                         gen_length=16, block_length=4, batch_size=2)
    res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
    for r in res.records:
        answer = r.positions - r.prompt_length
        assert (answer // 4 == r.block).all(), (r.step, r.block, answer)
    assert {r.block for r in res.records} == {0, 1, 2, 3}


def test_records_have_the_schema_dtypes(embedded):
    # the schema's column types (`schema.StateRecord`): hidden states are stored in float16
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=2, states_per_example=2, batch_size=2)
    res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
    assert res.records
    for r in res.records:
        kinds = {name: getattr(r, name).dtype for name in ("tokens", "positions", "candidate", "confidence",
                                                           "entropy", "committed", "hidden", "tv", "kl", "attention")}
        assert kinds == {"tokens": np.int32, "positions": np.int32, "candidate": np.int32, "confidence": np.float32,
                         "entropy": np.float32, "committed": np.bool_, "hidden": np.float16, "tv": np.float32,
                         "kl": np.float32, "attention": np.float32}


@pytest.mark.parametrize("topk", [1, 2])
def test_probe_forwards_count_every_chunk_of_every_state(embedded, topk):
    """With `chunk_size` 1 every perturbed copy is its own forward: a state of m masked positions
    costs m · topk probe forwards, and the recorder sums them over all its states."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=2, states_per_example=2, batch_size=2,
                         chunk_size=1, topk=topk)
    res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
    copies = sum(len(r.positions) for r in res.records) * topk
    assert copies > 0 and res.probe_forwards == copies


def test_rows_with_fewer_masked_positions_record_matrices_of_their_own_size(embedded):
    """The recorder pads a step's rows to the widest; attention, like tv and kl, must be cut back to
    the row's own masked positions ([m, m] in the schema), not keep the padded slots."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=8, states_per_example=None,
                         policies=["threshold:threshold=0.7"], batch_size=8)
    res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
    for r in res.records:
        m = len(r.positions)
        assert r.attention.shape == r.tv.shape == r.kl.shape == (m, m), (r.example_id, r.step)
    assert len({len(r.positions) for r in res.records}) > 3


def test_a_sampled_harvest_measures_influence_at_the_sampled_candidate(embedded):
    """`topk` 1 fixes each column to its recorded candidate: at temperature > 0 that is the sampled
    value, which is not always the most likely one."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=4, states_per_example=None, batch_size=4,
                         temperature=2.0)
    res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
    sampled = 0
    for r in res.records:
        base, tv = _recomputed(embedded, r)
        np.testing.assert_allclose(r.tv, tv, atol=1e-4)
        sampled += int((base[0].argmax(-1).numpy() != r.candidate).sum())
    assert sampled > 0  # some candidates are not the argmax: the test tells the two apart


def test_topk_values_never_include_the_mask_token():
    """The top-k values skip the mask id even where the model finds it likely (fixing a position to
    the mask is no perturbation: it would dilute every column's influence)."""
    den = MockDenoiser(vocab_size=12, seed=1)
    den.bias[den.mask_id] = 3.0  # the mask is among each position's most likely values
    prompts = [[1, 2, 3], [4, 5, 6]]
    meta = [{"example_id": f"e{i}", "task": "t", "policy": "low_confidence", "fingerprint": den.fingerprint,
             "prompt_length": 3} for i in range(2)]
    rec = Recorder(build_policy("low_confidence"), torch.ones(2, 8, dtype=torch.bool), [0, 0], meta, den.mask_id,
                   topk=2)
    generate(den, prompts, rec, gen_length=8)
    assert rec.records
    for r in rec.records:
        base, tv = _recomputed(den, r, topk=2)
        if len(r.positions) > 1:
            assert (base[0].topk(2, -1).indices == den.mask_id).any()  # unforbidden, the mask would be a value
        np.testing.assert_allclose(r.tv, tv, atol=1e-5)
