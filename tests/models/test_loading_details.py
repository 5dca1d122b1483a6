"""Loading details the other model tests leave open: local-path and argument checks, the device a
model is moved to, CUDA device indices, the remote-code error rewrapping, RoPE restoration, the
tied-tensor key of the stored-weights fingerprint, and the small utilities (revisions, stable
hashes, the tensor cache, output paths)."""

import json
import re
import types

import pytest
import torch
from torch import nn

from depmask.models import HFDenoiser
from depmask.models.fingerprint import weights_hash
from depmask.models.hf_denoiser import check_device
from depmask.models.remote_code import (
    default_rope_entry,
    default_rope_parameters,
    load_remote,
    restore_rope_buffers,
)

# ----- remote code: RoPE -----


def test_default_rope_takes_the_configs_head_dim_over_hidden_size_per_head():
    """A config's `head_dim` (Gemma-style, not hidden_size / heads) sets the rotated width."""
    config = types.SimpleNamespace(rope_theta=10000.0, hidden_size=64, num_attention_heads=4, head_dim=8)
    inv_freq, _ = default_rope_parameters(config)
    assert torch.allclose(inv_freq, torch.tensor([1e4 ** (-2 * i / 8) for i in range(4)]))


def test_default_rope_with_only_a_dim_keyword_reads_the_config():
    """The old `base`/`dim` keywords are used only as a pair; a lone one leaves the config in charge."""
    config = types.SimpleNamespace(rope_theta=10000.0, hidden_size=16, num_attention_heads=2)
    assert torch.equal(default_rope_parameters(config, None, dim=4)[0], default_rope_parameters(config)[0])


def test_an_entry_someone_else_put_in_place_is_not_removed(monkeypatch):
    """Only depmask's own `"default"` entry is taken out afterwards."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    monkeypatch.setitem(ROPE_INIT_FUNCTIONS, "default", None)  # undone at teardown, whatever is left
    monkeypatch.delitem(ROPE_INIT_FUNCTIONS, "default")
    theirs = object()
    with default_rope_entry():
        ROPE_INIT_FUNCTIONS["default"] = theirs
    assert ROPE_INIT_FUNCTIONS.get("default") is theirs


class _Rotary(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config, self.rope_init_fn, self.attention_scaling = config, default_rope_parameters, 0.5
        self.register_buffer("inv_freq", torch.zeros(4), persistent=False)
        self.original_inv_freq = torch.zeros(4)


def test_restore_rope_buffers_refills_and_counts_rotary_modules():
    """Each transformers-4-style rotary module gets its frequencies, its `original_inv_freq` and its
    scaling back, and is counted; modules without a config are not."""
    config = types.SimpleNamespace(rope_theta=10000.0, hidden_size=16, num_attention_heads=2)
    model = nn.Sequential(_Rotary(config), _Rotary(config), nn.Linear(2, 2))
    no_config = _Rotary(config)
    del no_config.config
    model.append(no_config)
    assert restore_rope_buffers(model) == 2
    expected = default_rope_parameters(config)[0]
    for rotary in model[:2]:
        assert torch.equal(rotary.inv_freq, expected) and torch.equal(rotary.original_inv_freq, expected)
        assert rotary.attention_scaling == 1.0
    assert not no_config.inv_freq.any()


def test_a_dream_models_original_inv_freq_is_restored_too(tiny_dream_dir):
    """Dream keeps `original_inv_freq` as a plain attribute: built on `meta`, it must be the restored
    buffer afterwards, not the constructor's meta tensor."""
    rotary = HFDenoiser.from_pretrained(tiny_dream_dir).model.rotary_emb
    assert rotary.original_inv_freq.device.type == "cpu"
    assert torch.equal(rotary.original_inv_freq, rotary.inv_freq)


# ----- remote code: which errors are rewrapped -----


def _raising_in_remote_code(exc: Exception):
    """A loader whose error is raised by a frame of a `transformers_modules` file."""
    scope = {"exc": exc}
    exec(compile("def load(path, *a, **k):\n    raise exc\n", "/x/transformers_modules/ckpt/modeling_x.py", "exec"), scope)
    return scope["load"]


def _ckpt(tmp_path, config):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return tmp_path


def test_an_oserror_from_remote_code_is_left_as_it_is(tmp_path):
    """A missing file is the user's to fix, even when the checkpoint's code is what noticed."""
    path = _ckpt(tmp_path / "c", {"auto_map": {"AutoModel": "m.M"}})
    with pytest.raises(FileNotFoundError, match="gone"):
        load_remote(_raising_in_remote_code(FileNotFoundError("gone")), path)


def test_api_errors_are_rewrapped_only_for_a_checkpoint_that_brings_code(tmp_path):
    """An AttributeError/TypeError raised by transformers itself is named as a version problem only
    when the checkpoint brings code (an `auto_map`); without one it is left alone."""
    def fails(exc):
        def load(path, **kwargs):
            raise exc
        return load

    plain = _ckpt(tmp_path / "plain", {"model_type": "bert"})
    with pytest.raises(AttributeError, match="nope"):
        load_remote(fails(AttributeError("nope")), plain)
    coded = _ckpt(tmp_path / "coded", {"auto_map": {"AutoModel": "m.M"}, "transformers_version": "4.40.0"})
    for exc in (AttributeError("nope"), TypeError("takes 1 positional argument")):
        with pytest.raises(RuntimeError, match="saved with transformers 4.40.0") as err:
            load_remote(fails(exc), coded)
        assert err.value.__cause__ is exc
    # a config.json that is not JSON counts as no code, and does not replace the error
    broken = _ckpt(tmp_path / "broken", "{not json")
    with pytest.raises(AttributeError, match="nope"):
        load_remote(fails(AttributeError("nope")), broken)


def test_an_unrecorded_transformers_version_is_said_so(tmp_path):
    path = _ckpt(tmp_path / "c", {"auto_map": {"AutoModel": "m.M"}})
    with pytest.raises(RuntimeError, match="saved with transformers an unrecorded version"):
        load_remote(_raising_in_remote_code(KeyError("default")), path)


def test_a_saved_remote_model_keeps_the_auto_map_it_was_loaded_with(tiny_mdlm_dir, tmp_path):
    """The LM is loaded as its `AutoModelForCausalLM` entry and registered under that entry, so
    `save_pretrained` does not point `AutoModel` (the headless trunk) at the LM class."""
    (tiny_mdlm_dir / "modeling_tiny_headless.py").write_text(
        "from .modeling_tiny_mdlm import TinyMDLMModel\nclass TinyHeadless(TinyMDLMModel):\n    pass\n")
    cfg = json.loads((tiny_mdlm_dir / "config.json").read_text())
    cfg["model_type"] = "tiny_headless"  # not registered natively: the checkpoint's own code loads
    cfg["auto_map"] = {"AutoConfig": "configuration_tiny_mdlm.TinyMDLMConfig",
                       "AutoModel": "modeling_tiny_headless.TinyHeadless",
                       "AutoModelForCausalLM": "modeling_tiny_mdlm.TinyMDLMForMaskedLM"}
    (tiny_mdlm_dir / "config.json").write_text(json.dumps(cfg))
    model = HFDenoiser.from_pretrained(tiny_mdlm_dir).model
    assert type(model).__module__.startswith("transformers_modules")
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["auto_map"]
    assert saved["AutoModel"] == "modeling_tiny_headless.TinyHeadless"
    assert saved["AutoModelForCausalLM"] == "modeling_tiny_mdlm.TinyMDLMForMaskedLM"


# ----- from_pretrained: paths and arguments -----


def test_a_home_relative_path_is_expanded(tiny_mdlm_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_mdlm_dir.parent))
    den = HFDenoiser.from_pretrained(f"~/{tiny_mdlm_dir.name}")
    assert den.vocab_size == 40


def test_a_directory_without_config_json_is_refused_by_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"not a local model directory with a config\.json"):
        HFDenoiser.from_pretrained(tmp_path / "empty")


def test_a_torch_attribute_that_is_not_a_dtype_is_refused(tiny_mdlm_dir):
    with pytest.raises(ValueError, match=r"`dtype` \('nn'\) is not a torch dtype name"):
        HFDenoiser.from_pretrained(tiny_mdlm_dir, dtype="nn")


def _native_config_with_remote_model(path, marker):
    """A config transformers knows natively (gpt2) whose `auto_map` names the checkpoint's own model
    class; importing that code writes `marker`."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "vocab_size": 40, "n_embd": 8, "n_layer": 1, "n_head": 2,
        "auto_map": {"AutoModel": "modeling_evil.Evil"}}))
    (path / "modeling_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import GPT2LMHeadModel\nclass Evil(GPT2LMHeadModel):\n    pass\n")
    return path


def test_remote_model_code_never_runs_without_trust_remote_code(tmp_path):
    """The config loads natively, but the model class is the checkpoint's own code: refused by name
    with `trust_remote_code=False`, and the code is never imported."""
    marker = tmp_path / "code-ran"
    path = _native_config_with_remote_model(tmp_path / "m", marker)
    with pytest.raises(Exception) as err:  # noqa: B017 (which error is checked below, after the marker)
        HFDenoiser.from_pretrained(path, trust_remote_code=False)
    assert not marker.exists(), "the checkpoint's own code was imported"
    assert err.type is ValueError
    assert re.search(r"brings its own modeling code \(modeling_evil\.Evil\).*trust_remote_code=True", str(err.value))


def test_a_model_that_is_neither_masked_lm_nor_remote_names_its_model_type(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8, "n_layer": 1,
                                                            "n_head": 2, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match=r"\(model_type 'gpt2'\) is neither a masked LM"):
        HFDenoiser.from_pretrained(tmp_path / "m")


def test_the_fingerprint_is_named_after_the_checkpoint_directory(tiny_mdlm_dir):
    assert HFDenoiser.from_pretrained(tiny_mdlm_dir).fingerprint.startswith(f"{tiny_mdlm_dir.name}@local:")


def test_a_tokenizer_config_that_is_not_an_object_is_named_not_raised(tiny_mdlm_dir):
    """transformers fails on such a file with an AttributeError: still "could not be loaded", and
    the model loads without a tokenizer."""
    (tiny_mdlm_dir / "tokenizer_config.json").write_text("[]")
    with pytest.warns(UserWarning, match=r"could not be loaded \(AttributeError"):
        den = HFDenoiser.from_pretrained(tiny_mdlm_dir)
    assert den.tokenizer is None and den.mask_id == 39


def test_a_checkpoint_with_only_a_vocab_txt_gets_its_tokenizer(tiny_bert_dir):
    """BERT-era checkpoints ship `vocab.txt` alone: it is a tokenizer file, and the mask id comes
    from it."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (tiny_bert_dir / "vocab.txt").write_text("\n".join(specials + [f"w{i}" for i in range(45)]) + "\n")
    den = HFDenoiser.from_pretrained(tiny_bert_dir)
    assert den.tokenizer is not None and den.mask_id == 4


# ----- devices -----


def test_the_model_is_moved_to_the_device_asked_for(tiny_mdlm_dir, monkeypatch):
    """`from_pretrained(device=...)` moves the model there (recorded, not performed: no GPU here)."""
    import depmask.models.hf_denoiser as hf

    moved = []
    real_to = nn.Module.to

    def to(self, *args, **kwargs):
        moved.append(torch.device(args[0]) if args and isinstance(args[0], (str, torch.device)) else None)
        return self if moved[-1] is not None and moved[-1].type == "cuda" else real_to(self, *args, **kwargs)

    monkeypatch.setattr(hf, "check_device", lambda device: torch.device(device))
    monkeypatch.setattr(nn.Module, "to", to)
    HFDenoiser.from_pretrained(tiny_mdlm_dir, device="cuda:1")
    assert torch.device("cuda:1") in moved


def _gpus(monkeypatch, n):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_cuda_indices_are_checked_against_the_devices_there_are(monkeypatch):
    _gpus(monkeypatch, 2)
    assert check_device("cuda:1") == torch.device("cuda:1") and check_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"`device` \('cuda:2'\): this machine has 2 CUDA device\(s\)"):
        check_device("cuda:2")
    _gpus(monkeypatch, 0)  # a driver that reports no device at all
    with pytest.raises(ValueError, match=r"`device` \('cuda:0'\): this machine has 0 CUDA device\(s\)"):
        check_device("cuda:0")


def test_a_device_of_the_wrong_type_is_named():
    with pytest.raises(ValueError, match=r"`device` \(1\.5\) is not a torch device"):
        check_device(1.5)
    assert check_device(None) == check_device("") == torch.device("cpu")


def test_an_index_is_an_accelerator_not_no_device():
    """`check_device(0)` gave the CPU (`device or "cpu"` took 0 for "not given") while 1 was
    refused: both are torch's accelerator index (found by mutation audit 15)."""
    if torch.accelerator.is_available():
        assert check_device(0).type != "cpu"
        return
    for index in (0, 1):
        with pytest.raises(ValueError, match=rf"`device` \({index}\) is not a torch device"):
            check_device(index)


# ----- fingerprint: the key of a tied tensor -----


class _Fused(nn.Module):
    """`v` is a view of `w`'s first rows: the same storage address, another shape (not a tie)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.arange(16.0).reshape(4, 4))
        self.register_buffer("v", self.w.data[:2])


def test_a_view_of_another_shape_is_not_read_under_the_tensors_name():
    """Only a tensor of the same address *and shape* counts as tied: `w`, absent from the checkpoint,
    is hashed as loaded, not as `v`'s stored values (same count once cut to `values`)."""
    model = _Fused()
    assert model.w.data_ptr() == model.v.data_ptr()
    stored_v = lambda values: torch.full((min(values, 8),), 100.0)  # noqa: E731
    only_v = lambda name, values: stored_v(values) if name == "v" else None  # noqa: E731
    both = lambda name, values: stored_v(values) if name == "v" else model.w.detach().flatten()[:values]  # noqa: E731
    assert weights_hash(model, values=4, stored=only_v) == weights_hash(model, values=4, stored=both)


def test_a_checkpoint_stored_without_the_base_model_prefix_keeps_its_fingerprint(tmp_path):
    """Weights saved under the base model's names (`embeddings.…`, not `bert.embeddings.…`) load
    into the masked LM; `from_pretrained` reads them as stored with the model's `base_model_prefix`,
    so a bfloat16 load has the float32 fingerprint."""
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "bert")
    weights = load_file(tmp_path / "bert" / "model.safetensors")
    save_file({k.removeprefix("bert."): v for k, v in weights.items()}, tmp_path / "bert" / "model.safetensors",
              metadata={"format": "pt"})
    fp32 = HFDenoiser.from_pretrained(tmp_path / "bert", mask_id=4)
    assert torch.equal(fp32.model.bert.embeddings.word_embeddings.weight, weights["bert.embeddings.word_embeddings.weight"])
    assert HFDenoiser.from_pretrained(tmp_path / "bert", mask_id=4, dtype="bfloat16").fingerprint == fp32.fingerprint


# ----- small utilities -----


def test_the_newest_revision_is_told_that_it_changed():
    from depmask.revisions import changes_since

    assert changes_since("r2", {"r1": "one", "r2": "two"}) == "it changed"
    assert changes_since(None, {}) == "it changed"


def test_stable_int_is_pinned_and_separates_its_parts():
    """Seeds and splits derived from ids must not move between versions or machines."""
    from depmask.stable_hash import stable_int

    assert stable_int("depmask", 7) == 4191738561769380699  # sha256("depmask\x1f7")[:8], big-endian
    assert stable_int("ab", "c") != stable_int("a", "bc")
    assert 0 <= stable_int("x") < 2**64


def test_tensor_cache_keeps_its_maxsize():
    from depmask.tensor_cache import tensor_cache

    ramp = tensor_cache(lambda n: torch.arange(n), maxsize=2)
    assert ramp.cache_info().maxsize == 2
    ramp(1), ramp(2), ramp(3)
    assert ramp.cache_info().currsize == 2


def test_a_blank_output_dir_is_refused(tmp_path):
    from depmask.paths import output_dir

    for blank in ("", "   "):
        with pytest.raises(ValueError, match=r"`out` \('\s*'\) is empty; give a directory"):
            output_dir("out", blank)


def test_existing_config_tells_none_from_not_an_object(tmp_path):
    """None: no config.json; {}: one that is not a JSON object (a list, invalid JSON, binary)."""
    from depmask.paths import existing_config

    assert existing_config("out", tmp_path / "new") == (tmp_path / "new", None)
    config = tmp_path / "config.json"
    for content in ("[1, 2]", "{broken", b"\xff\xfe\x00"):
        config.write_bytes(content if isinstance(content, bytes) else content.encode())
        assert existing_config("out", tmp_path) == (tmp_path, {}), content
    config.write_text('{"model_type": "x"}')
    assert existing_config("out", tmp_path)[1] == {"model_type": "x"}
