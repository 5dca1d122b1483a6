"""Details of the training side and of the head's inputs and checkpoints that no fit-level test
could see: the resume comparisons (`_same`, the data arguments a resume may change, `fit` may not
change what `validate` may), the export guards, the head data's split, cap and checks, the MDLM
data's pool and val sizes, the head's slot and pair features, the scorers' initial logits, and the
head checkpoint's file handling and refusals."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from depmask.cli import main
from depmask.data_gen.dataset import HarvestError
from depmask.predictor import DependencyHead
from depmask.predictor.features import (
    ATTENTION_FEATURES,
    SlotEncoder,
    attention_pair_features,
    offset_from_first,
)
from depmask.predictor.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    capture_layers_problem,
    check_capture_layers,
    read_checkpoint,
    write_checkpoint,
)
from depmask.predictor.pair_scorers import INIT_LOGIT, BilinearScorer, PairScorer
from depmask.train import TaskMixtureDataModule
from depmask.train.cli import DepmaskCLI, _same
from depmask.train.export_guard import nonfinite_reason, total_steps
from depmask.train.head_data import HeadDataModule, _capped, _States, in_val
from depmask.train.mdlm_data import _TrainLoader, encode_example
from tests.train.mdlm_cli_run import MDLM_FIT, _a_fit

# --- resume comparisons ---------------------------------------------------------------------------


def test_config_values_compare_as_plain_data():
    """A checkpoint's tuple equals the command's list and NaN equals NaN: otherwise every resume
    with a list setting or a NaN one was refused as 'other settings'."""
    assert _same((1, 2), [1, 2]) and _same([1, 2], (1, 2))
    assert _same(float("nan"), float("nan"))
    assert not _same([1, 2], [2, 1]) and not _same(0.1, float("nan"))


def test_a_resume_may_load_with_other_workers_but_not_other_data():
    """`num_workers` is how batches are loaded, not which: a resume may change it; any other data
    argument that differs from the checkpoint's is named."""
    cli = DepmaskCLI.__new__(DepmaskCLI)  # no parsing: `_data_diff` reads only `config`
    cli.config = {"fit": {"data": {"num_workers": 4, "seed": 1, "batch_size": 8}}}
    saved = {"datamodule_hyper_parameters": {"num_workers": 0, "seed": 0, "batch_size": 8}}
    assert cli._data_diff("fit", saved) == {"data.seed": (0, 1)}
    assert cli._data_diff("fit", {}) == {}  # a checkpoint from before the data module recorded them


def test_a_resumed_fit_may_not_change_what_only_validate_may(tmp_path):
    """`val_decode_items` may differ for a `validate` only: a resumed `fit` with another value is
    refused like any other model setting."""
    ckpt = _a_fit(tmp_path)
    with pytest.raises(ValueError, match=r"resumes a run trained with other settings.*"
                                         r"model.val_decode_items is 2 in the checkpoint, 1 here"):
        main([*MDLM_FIT, "--model.val_decode_items", "1", "--model.export_dir", "null", "--ckpt_path", str(ckpt)])


# --- export guards --------------------------------------------------------------------------------


def test_infinite_weights_are_named_and_integer_buffers_are_not_read():
    """A diverged fit may end at infinity, not only NaN; integer tensors cannot diverge."""
    layer = nn.Linear(2, 2)
    layer.register_buffer("count", torch.tensor([3]))
    assert nonfinite_reason(layer) is None
    with torch.no_grad():
        layer.bias[0] = float("-inf")
    assert nonfinite_reason(layer).startswith("1 of its tensors hold NaN or infinite values (e.g. bias)")


def test_the_schedule_spans_at_least_one_step_and_an_endless_fit_is_named():
    assert total_steps(SimpleNamespace(estimated_stepping_batches=0)) == 1  # a LambdaLR over 0 steps divides by 0
    assert total_steps(SimpleNamespace(estimated_stepping_batches=7.0)) == 7
    with pytest.raises(ValueError, match="bound it with `--trainer.max_steps`"):
        total_steps(SimpleNamespace(estimated_stepping_batches=float("inf")))


# --- head data ------------------------------------------------------------------------------------


def test_the_split_seed_moves_the_split():
    ids = [f"task:{i}" for i in range(200)]
    a = [in_val(e, 0.3, 0) for e in ids]
    assert a == [in_val(e, 0.3, 0) for e in ids] and a != [in_val(e, 0.3, 1) for e in ids]
    assert 30 < sum(a) < 90  # about 30 % of the examples


def test_the_training_cap_skips_an_example_that_would_pass_it_and_takes_a_smaller_one():
    """Whole examples until none fits: a three-state example that would pass the cap is skipped,
    not the end of the draw, so a one-state example after it still fills the cap."""
    ids = ["a"] * 3 + ["b"] * 3 + ["c"]
    for seed in range(10):
        assert len(_capped(list(range(7)), ids, 4, seed)) == 4


def test_the_training_cap_cuts_a_first_example_longer_than_it_and_follows_its_seed():
    ids = ["a"] * 5 + ["b"] + ["c"] + ["d"]
    kept = {seed: _capped(list(range(8)), ids, 2, seed) for seed in range(8)}
    assert all(1 <= len(k) <= 2 and k == sorted(k) for k in kept.values())
    assert len({tuple(k) for k in kept.values()}) > 1  # `split_seed` decides which examples


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"val_fraction": 1.0}, r"`val_fraction` \(1.0\) must lie in \(0, 1\)"),
    ({"val_fraction": 0.0}, r"`val_fraction` \(0.0\) must lie in \(0, 1\)"),
    ({"batch_size": 0}, r"`batch_size` \(0\) must be >= 1"),
])
def test_bad_head_data_settings_are_named_before_the_harvest_is_read(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HeadDataModule("no-such-harvest", **kwargs)


def test_a_state_read_alone_carries_its_table_index():
    states = _States([{"x": i} for i in range(10)], [5, 7])
    assert states[1]["state"] == 7 and states[0]["state"] == 5 and len(states) == 2


def test_the_head_data_manifest_counts_and_loader_workers(harvest):
    dm = HeadDataModule(str(harvest), val_fraction=0.3, num_workers=1)
    m = dm.manifest
    assert (m["train_states"], m["val_states"]) == (len(dm.train_idx), len(dm.val_idx))
    assert (m["train_examples"], m["val_examples"]) == (len(dm.train_examples), len(dm.val_examples))
    assert m["train_examples"] != m["val_examples"]  # the check can see them swapped
    assert dm.val_dataloader().persistent_workers  # workers kept between epochs
    assert not HeadDataModule(str(harvest), val_fraction=0.3).val_dataloader().persistent_workers


def test_a_split_with_no_validation_state_is_refused(harvest):
    with pytest.raises(HarvestError, match=r"too few for a train/val split .*\(\d+ train / 0 val states\)"):
        HeadDataModule(str(harvest), val_fraction=1e-9)


# --- MDLM data ------------------------------------------------------------------------------------


def test_an_empty_val_set_is_refused():
    with pytest.raises(ValueError, match=r"`val_size` \(0\) must be >= 1"):
        TaskMixtureDataModule(tasks=["sort"], val_size=0)


def test_pool_and_val_sets_are_split_among_the_tasks_and_val_is_the_test_split():
    dm = TaskMixtureDataModule(tasks=["sort", "permutation"], pool_size=6, items_per_epoch=8, batch_size=4,
                               val_size=4, seed=2)
    dm.setup()
    assert len(dm._train.pool) == 6 and len(dm._val) == 4
    want = [encode_example(dm.tokenizer, ex.prompt, ex.answer) for t in dm.tasks
            for ex in t.examples("test", 2, seed=2)]
    assert [dm._val[i] for i in range(4)] == want


def test_only_training_batches_count_as_trained():
    """A validation batch that reaches the model mid-epoch is not a training batch: counting it
    made a resume skip training batches it never trained."""
    dm = TaskMixtureDataModule(tasks=["sort"], pool_size=8, items_per_epoch=8, batch_size=4, val_size=4)
    dm.setup()
    loader = _TrainLoader(dm._train, epoch_of=lambda: 0, batch_size=4)
    dm.trainer = SimpleNamespace(training=False, train_dataloader=loader)
    dm.on_before_batch_transfer({}, 0)
    assert loader.trained == 0
    dm.trainer.training = True
    dm.on_before_batch_transfer({}, 0)
    assert loader.trained == 1


# --- head features and scorers --------------------------------------------------------------------


def test_offsets_count_from_the_first_valid_slot_clipped_and_zero_on_padding():
    positions = torch.tensor([[9, 5, 7, 30, 2], [4, 4, 4, 4, 4]])
    valid = torch.tensor([[True, True, True, True, False], [False] * 5])
    assert offset_from_first(positions, valid, max_distance=8).tolist() == [[4, 0, 2, 8, 0], [0] * 5]


def _encoder(use_confidence: bool = True) -> SlotEncoder:
    torch.manual_seed(0)
    enc = SlotEncoder(hidden_size=6, dim=8, max_distance=4, use_confidence=use_confidence)
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(std=0.5)
    return enc


def test_the_slot_encoder_is_its_documented_formula():
    """norm_out(proj(norm_in(h)) + E(offset) + MLP(conf, log conf, entropy)), zero on padding."""
    enc = _encoder()
    g = torch.Generator().manual_seed(1)
    hidden, conf, ent = torch.randn(1, 3, 6, generator=g), torch.tensor([[0.9, 0.2, 0.5]]), torch.tensor([[0.1, 1.5, 0.0]])
    positions, valid = torch.tensor([[3, 4, 6]]), torch.tensor([[True, True, False]])
    out = enc(hidden, positions, valid, conf, ent)
    scalars = torch.stack([conf, conf.log(), ent], dim=-1)[:, :2]
    want = enc.norm_out(enc.proj(enc.norm_in(hidden[:, :2])) + enc.offset(torch.tensor([[0, 1]])) + enc.scalars(scalars))
    torch.testing.assert_close(out[:, :2], want)
    assert (out[:, 2] == 0).all()


def test_the_slot_encoder_clamps_confidence_and_entropy_into_range():
    enc = _encoder()
    hidden, positions, valid = torch.randn(1, 2, 6), torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool)
    a = enc(hidden, positions, valid, torch.tensor([[1.5, -0.5]]), torch.tensor([[-2.0, 0.3]]))
    b = enc(hidden, positions, valid, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.3]]))
    torch.testing.assert_close(a, b)


def test_negative_attention_counts_as_none_and_a_mismatched_shape_is_named():
    a = torch.tensor([[[0.0, 0.5, -0.3], [0.2, 0.0, 0.2], [0.1, 0.1, 0.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    f = attention_pair_features(a, valid)[0]
    assert f[0, 2, 0].item() == 0.0 and f[0, 1, 0].item() == pytest.approx(1.0) and f[0, 1, 4].item() == pytest.approx(0.5)
    assert f.shape[-1] == ATTENTION_FEATURES
    with pytest.raises(ValueError, match=r"`attention` must be \[b, m, m\] = \[1, 4, 4\]"):
        attention_pair_features(a, torch.ones(1, 4, dtype=torch.bool))


def test_the_lean_scorer_adds_a_linear_function_of_the_attention_features():
    torch.manual_seed(0)
    scorer = BilinearScorer(4, 5, attention=True)
    u, rel = torch.randn(1, 3, 4), torch.full((1, 3, 3), 2)
    att = torch.rand(1, 3, 3, ATTENTION_FEATURES)
    q, k = u @ scorer.qk.weight[:4].T, u @ scorer.qk.weight[4:].T
    want = q @ k.transpose(-1, -2) / 2 + INIT_LOGIT + (att @ scorer.att.weight[0])
    torch.testing.assert_close(scorer(u, rel, att), want, rtol=1e-5, atol=1e-6)


def test_scorers_start_near_a_small_influence_with_an_acting_product_term():
    """Most influences are small: both scorers start at logit −2 (sigmoid ≈ 0.12) for every
    distance, and the pair product's weights start random (zero would block its gradient)."""
    assert INIT_LOGIT == -2.0
    assert (BilinearScorer(4, 5).rel_logit.weight == -2.0).all()
    scorer = PairScorer(8, 6, 5, dropout=0.0)
    assert scorer.mlp[-1].bias.item() == -2.0 and scorer.prod.abs().sum() > 0
    assert isinstance(PairScorer(8, 6, 5, 0.0, activation="relu").mlp[0], nn.ReLU)


# --- head checkpoints -----------------------------------------------------------------------------

FP = "tiny@local:abc-123"


def _head() -> DependencyHead:
    torch.manual_seed(0)
    return DependencyHead(24, dim=16, layers=0, heads=2, max_distance=4, base_fingerprint=FP).eval()


def _edit(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_a_manifest_with_a_non_finite_number_or_of_another_type_is_refused_before_writing(tmp_path):
    head = _head()
    with pytest.raises(TypeError, match="must be JSON-serialisable"):
        head.save_pretrained(tmp_path / "nan", training_manifest={"ap": float("nan")})
    with pytest.raises(TypeError, match=r"`training_manifest` must be a dict or None, got list"):
        write_checkpoint(tmp_path / "list", head.config, head.state_dict(), [1])
    assert not (tmp_path / "nan").exists() and not (tmp_path / "list").exists()


@pytest.mark.parametrize(("changes", "message"), [
    ({"dropout": float("nan")}, r"`dropout` is nan, expected float or int"),
    ({"training_manifest": [1]}, r"`training_manifest` is list, expected an object or null"),
])
def test_a_config_with_a_non_finite_number_or_a_bad_manifest_is_refused(tmp_path, changes, message):
    out = _head().save_pretrained(tmp_path / "h")
    _edit(out / CONFIG_NAME, **changes)
    with pytest.raises(ValueError, match=message):
        read_checkpoint(out)


def test_checkpoint_files_are_ordinary_files_and_a_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    from depmask.predictor import io

    old = os.umask(0o022)
    try:
        out = _head().save_pretrained(tmp_path / "h")
    finally:
        os.umask(old)
    assert {(out / n).stat().st_mode & 0o777 for n in (CONFIG_NAME, WEIGHTS_NAME)} == {0o644}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        _head().save_pretrained(out)
    assert sorted(p.name for p in out.iterdir()) == [WEIGHTS_NAME]  # no `.model.safetensors.*.tmp`


def test_a_file_is_no_checkpoint_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"exists and is not a directory"):
        _head().save_pretrained(tmp_path / "f")


def test_a_checkpoint_path_with_a_tilde_is_written_and_read_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # an unexpanded `~/h` would land (or be read) in `./~/h`
    head = _head()
    write_checkpoint("~/h", head.config, head.state_dict())
    assert (tmp_path / "home" / "h" / CONFIG_NAME).is_file()
    config, state = read_checkpoint("~/h")
    assert config["base_fingerprint"] == FP and state.keys() == head.state_dict().keys()


def test_a_default_capture_record_is_resolved_against_the_model():
    """`capture_layers: null` in the manifest is the default (the last quarter), not 'anything':
    a head trained on it does not fit a model that captures other layers."""
    den = SimpleNamespace(capture=SimpleNamespace(stack=[None] * 4, layers=[0]))
    with pytest.raises(ValueError, match=r"reads attention averaged over layers \[3\]"):
        check_capture_layers(True, {"capture_layers": None}, den)
    check_capture_layers(True, {"capture_layers": None}, SimpleNamespace(capture=SimpleNamespace(stack=[None] * 4,
                                                                                                layers=[3])))


def test_capture_layer_sets_compare_in_any_order():
    assert capture_layers_problem(True, {"capture_layers": [0, 3]}, [3, 0]) is None
    assert capture_layers_problem(True, {"capture_layers": [0, 3]}, [3, 1]) is not None
