"""Fingerprints hash the weights as stored: the dtype a checkpoint is loaded in does not change
a model's identity, other weights do, and fingerprints taken before this rule are unchanged."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from depmask.models import HFDenoiser
from depmask.models.fingerprint import fingerprint, stored_tensors, weights_hash
from depmask.models.tiny_mdlm import save_tiny_mdlm
from depmask.predictor import DependencyHead
from tests.conftest import EMBEDDED
from tests.models.conftest import tiny_mdlm

HEAD = EMBEDDED.parent / "tiny-tasks-head"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_float32_checkpoint_keeps_its_fingerprint_in_any_dtype(tiny_mdlm_dir, dtype):
    full = HFDenoiser.from_pretrained(tiny_mdlm_dir)
    low = HFDenoiser.from_pretrained(tiny_mdlm_dir, dtype=dtype)
    assert low.dtype == getattr(torch, dtype)
    assert low.fingerprint == full.fingerprint
    # as loaded, the rounded values would have given another digest: the rule is what keeps it
    assert fingerprint(low.model, path=tiny_mdlm_dir) != full.fingerprint


def test_fingerprints_taken_as_loaded_are_unchanged(tiny_mdlm_dir):
    """A checkpoint loaded in its own dtype hashes the same stored or loaded: heads, harvests and
    eval provenance recorded before keep matching."""
    den = HFDenoiser.from_pretrained(tiny_mdlm_dir)
    assert den.fingerprint == fingerprint(den.model, path=tiny_mdlm_dir)


def test_the_shipped_head_is_accepted_by_the_embedded_model_in_bfloat16():
    den = HFDenoiser.from_pretrained(EMBEDDED, dtype="bfloat16")
    head = DependencyHead.from_pretrained(HEAD, denoiser=den)  # refused before the rule
    assert head.base_fingerprint == den.fingerprint


def test_other_stored_weights_give_another_fingerprint(tmp_path):
    a = save_tiny_mdlm(tiny_mdlm(0), tmp_path / "a")
    b = save_tiny_mdlm(tiny_mdlm(0), tmp_path / "b")
    weights = load_file(b / "model.safetensors")
    name = next(iter(HFDenoiser.from_pretrained(b).model.state_dict()))  # always sampled
    weights[name] = weights[name] + 1e-3
    save_file(weights, b / "model.safetensors", metadata={"format": "pt"})
    assert HFDenoiser.from_pretrained(a, dtype="bfloat16").fingerprint != \
        HFDenoiser.from_pretrained(b, dtype="bfloat16").fingerprint


def test_a_sharded_checkpoint_reads_as_the_single_file(tmp_path):
    single = save_tiny_mdlm(tiny_mdlm(0), tmp_path / "single")
    sharded = tmp_path / "sharded"
    model = tiny_mdlm(0)
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    shards = set(json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"].values())
    assert len(shards) > 1
    read_single, read_sharded = stored_tensors(single), stored_tensors(sharded)
    for name in model.state_dict():
        assert torch.equal(read_single(name, 100), read_sharded(name, 100)), name
    assert weights_hash(model, stored=read_sharded) == weights_hash(model, stored=read_single) == weights_hash(model)


def test_the_reader_gives_the_leading_values_and_none_for_unknown_names(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    t = torch.arange(60.0).reshape(6, 10)
    save_file({"model.w": t, "b": torch.arange(7.0), "s": torch.tensor(3.0)}, path / "model.safetensors")
    read = stored_tensors(path, prefix="model")
    assert torch.equal(read("model.w", 25), t.flatten()[:25])
    assert torch.equal(read("w", 25), t.flatten()[:25])  # a base model's name, the file has the head's
    assert torch.equal(read("b", 100), torch.arange(7.0))
    assert torch.equal(read("s", 5), torch.tensor([3.0]))
    assert read("missing", 5) is None
    assert stored_tensors(tmp_path / "nothing-here") is None
    assert stored_tensors(None) is None


def test_a_tensor_the_checkpoint_lacks_is_hashed_as_loaded():
    model = tiny_mdlm(0)
    assert weights_hash(model, stored=lambda name, values: None) == weights_hash(model)
    state = model.state_dict()
    first = next(iter(state))
    changed = weights_hash(model, stored=lambda name, values: state[name].flatten()[:values] + 1 if name == first else None)
    assert changed != weights_hash(model)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_tied_output_bias_is_read_as_stored(tmp_path, dtype):
    """BERT's `cls.predictions.decoder.bias` is the last tensor (always sampled) and the checkpoint
    keeps it under `cls.predictions.bias`: it was hashed as loaded, so a trained BERT (non-zero
    bias) changed fingerprint with the dtype."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    model = BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # trained: not the zeros of init, which round exactly
    model.save_pretrained(tmp_path / "bert")
    fp32 = HFDenoiser.from_pretrained(tmp_path / "bert", mask_id=4).fingerprint
    assert HFDenoiser.from_pretrained(tmp_path / "bert", mask_id=4, dtype=dtype).fingerprint == fp32
