"""A checkpoint's own modeling code under transformers 5: the RoPE entry it removed, and errors
raised inside that code named with the checkpoint and the transformers versions."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from depmask.models import HFDenoiser
from depmask.models.remote_code import default_rope_entry, default_rope_parameters


def test_default_rope_is_plain_rope_from_the_config_or_the_old_keywords():
    config = SimpleNamespace(rope_theta=500000.0, hidden_size=64, num_attention_heads=4)
    inv_freq, scale = default_rope_parameters(config, None)
    assert scale == 1.0 and inv_freq.shape == (8,)
    assert torch.allclose(inv_freq, torch.tensor([500000.0 ** (-2 * i / 16) for i in range(8)]))
    partial = SimpleNamespace(rope_theta=10000.0, hidden_size=64, num_attention_heads=2, head_dim=32,
                              partial_rotary_factor=0.5)
    assert torch.allclose(default_rope_parameters(partial)[0], torch.tensor([1e4 ** (-2 * i / 16) for i in range(8)]))
    v5_style = SimpleNamespace(rope_parameters={"rope_theta": 10000.0, "rope_type": "default"}, hidden_size=16,
                               num_attention_heads=2)
    assert torch.allclose(default_rope_parameters(v5_style)[0], torch.tensor([1e4 ** (-2 * i / 8) for i in range(4)]))
    assert torch.allclose(default_rope_parameters(None, None, base=10000, dim=8)[0],
                          default_rope_parameters(v5_style)[0])
    with pytest.raises(ValueError, match="rope_theta"):
        default_rope_parameters(SimpleNamespace(hidden_size=16, num_attention_heads=2))


def test_the_default_entry_is_there_only_while_remote_code_loads(monkeypatch):
    monkeypatch.delitem(ROPE_INIT_FUNCTIONS, "default", raising=False)
    with default_rope_entry():
        assert ROPE_INIT_FUNCTIONS["default"] is default_rope_parameters
    assert "default" not in ROPE_INIT_FUNCTIONS
    mine = object()  # a transformers that has one keeps its own
    monkeypatch.setitem(ROPE_INIT_FUNCTIONS, "default", mine)
    with default_rope_entry():
        assert ROPE_INIT_FUNCTIONS["default"] is mine
    assert ROPE_INIT_FUNCTIONS["default"] is mine


def test_a_native_partial_rotary_model_loads_after_depmask_loaded_one(tiny_dream_dir, tmp_path):
    # left in place, the global entry overrode native rotary modules' own default at their weight
    # init, and Phi (half its head dims rotated) failed to load anywhere later in the process
    from transformers import AutoModelForCausalLM, PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    PhiForCausalLM(PhiConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, partial_rotary_factor=0.5)).save_pretrained(tmp_path / "phi")
    HFDenoiser.from_pretrained(tiny_dream_dir)
    assert "default" not in ROPE_INIT_FUNCTIONS
    phi = AutoModelForCausalLM.from_pretrained(tmp_path / "phi")
    assert phi(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 50)


def test_a_dream_checkpoint_that_looks_up_default_rope_loads(tiny_dream_dir, monkeypatch):
    # the stand-in's code does `ROPE_INIT_FUNCTIONS["default"]` at construction, as Dream's does;
    # transformers 5 has no such entry, and Dream-7B failed to load with a bare KeyError
    monkeypatch.delitem(ROPE_INIT_FUNCTIONS, "default", raising=False)
    den = HFDenoiser.from_pretrained(tiny_dream_dir)
    assert den.logits_shift
    out = den(torch.randint(0, 37, (2, 9)))  # the stand-in checks its RoPE frequencies in forward
    assert out.logits.shape == (2, 9, 40)


def _broken_copy(src, dst, line):
    shutil.copytree(src, dst)
    modeling = dst / "modeling_tiny_dream.py"  # the tiny MDLM's own class is registered natively
    modeling.write_text(line + "\n" + modeling.read_text())
    return dst


def test_an_error_inside_the_checkpoints_code_names_the_checkpoint_and_versions(tiny_dream_dir, tmp_path):
    import transformers

    broken = _broken_copy(tiny_dream_dir, tmp_path / "broken-remote-code",
                          "from transformers.utils import a_helper_only_transformers_4_had  # noqa")
    recorded = json.loads((broken / "config.json").read_text()).get("transformers_version")
    with pytest.raises(RuntimeError) as err:
        HFDenoiser.from_pretrained(broken)
    message = str(err.value)
    assert str(broken) in message and transformers.__version__ in message
    assert f"saved with transformers {recorded}" in message and "a_helper_only_transformers_4_had" in message
    assert isinstance(err.value.__cause__, ImportError)


def test_an_error_outside_the_checkpoints_code_is_left_as_it_is(tiny_dream_dir, tmp_path):
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_dream_dir, broken)
    for f in broken.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(OSError):  # transformers' own "no weights" error, not rewrapped
        HFDenoiser.from_pretrained(broken)


def test_a_model_class_written_for_transformers_4_loads_with_its_weights(tiny_llada_v4_dir):
    # LLaDA-8B's class never calls post_init() and its tie_weights() takes no arguments: transformers 5
    # failed on `all_tied_weights_keys`. Adapted, it loads the stored weights, untied, as stored.
    from safetensors.torch import load_file

    den = HFDenoiser.from_pretrained(tiny_llada_v4_dir)
    stored = load_file(tiny_llada_v4_dir / "model.safetensors")
    loaded = den.model.state_dict()
    assert set(loaded) == set(stored)
    assert all(torch.equal(loaded[k], stored[k]) for k in stored)
    assert den.model.model.ff_out.weight.data_ptr() != den.model.model.wte.weight.data_ptr()
    assert type(den.model).__name__ == "TinyLLaDAV4" and type(den.model).__module__.startswith("transformers_modules")
    ids = torch.randint(0, 39, (2, 5))
    expected_logits = den.model.model.ff_out(den.model.model(ids)[1])
    assert torch.allclose(den(ids).logits, expected_logits.float())


def test_without_the_adaptation_transformers_5_cannot_load_it(tiny_llada_v4_dir, monkeypatch):
    import depmask.models.remote_code as remote_code

    # the class as its checkpoint wrote it (once adapted, its module holds the adapted one)
    monkeypatch.setattr(remote_code, "compatible_class",
                        lambda cls: cls.__mro__[1] if vars(cls).get("_depmask_adapted") else cls)
    with pytest.raises(RuntimeError, match="all_tied_weights_keys") as err:
        HFDenoiser.from_pretrained(tiny_llada_v4_dir)
    assert "saved with transformers 4.46.2" in str(err.value)


def test_the_adaptation_changes_nothing_for_a_class_written_for_transformers_5(tiny_dream_dir):
    den = HFDenoiser.from_pretrained(tiny_dream_dir)
    cls = type(den.model)
    assert cls.__mro__[1].__name__ == cls.__name__  # the adapting subclass over the checkpoint's class
    assert "tie_weights" not in vars(cls)  # its tie_weights takes transformers 5's arguments already


def test_an_adapted_model_pickles_and_saves_its_code(tiny_llada_v4_dir, tmp_path):
    # the adapted class is what its module names (pickle looks classes up by name: `ddp_spawn`
    # pickles the model), and it is registered for its auto class, so save_pretrained writes the
    # modeling code its config's auto_map points at
    import pickle

    den = HFDenoiser.from_pretrained(tiny_llada_v4_dir)
    again = pickle.loads(pickle.dumps(den.model))
    ids = torch.randint(0, 39, (1, 4))
    assert torch.equal(again(ids).logits, den.model(ids).logits)
    den.model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "modeling_tiny_llada_v4.py").is_file()
    assert HFDenoiser.from_pretrained(tmp_path / "saved").model.model.ff_out.weight.equal(den.model.model.ff_out.weight)
    # loading it again does not adapt the adapted class a second time
    assert type(HFDenoiser.from_pretrained(tiny_llada_v4_dir).model).__mro__[2].__name__ != "TinyLLaDAV4"


def test_transformers_own_errors_are_left_as_they_are(tiny_dream_dir):
    # a user setting (trust_remote_code false, a bad attn_implementation) is transformers' to name:
    # wrapped, it read as a transformers-version problem with advice that does not apply
    with pytest.raises(ValueError, match="trust_remote_code"):
        HFDenoiser.from_pretrained(tiny_dream_dir, trust_remote_code=False)
    with pytest.raises(ValueError, match="bogus"):
        HFDenoiser.from_pretrained(tiny_dream_dir, attn_implementation="bogus")


def test_a_class_that_names_itself_in_super_still_loads(tiny_llada_v4_dir):
    # transformers-4-era code often writes `super(ClassName, self)`: with the adapted subclass put
    # under the class's own name in its module, that call went back into the class: RecursionError
    modeling = tiny_llada_v4_dir / "modeling_tiny_llada_v4.py"
    text = modeling.read_text()
    modeling.write_text(text.replace("super().__init__(config)", "super(TinyLLaDAV4, self).__init__(config)", 1))
    assert "super(TinyLLaDAV4, self)" in modeling.read_text()
    den = HFDenoiser.from_pretrained(tiny_llada_v4_dir)
    assert den(torch.randint(0, 39, (1, 4))).logits.shape == (1, 4, 40)
