"""HFDenoiser: loading from local directories, mask/EOS resolution, the Dream shift, errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

from depmask.decoding import build_policy, generate
from depmask.models import Denoiser, HFDenoiser
from tests.models.conftest import tiny_mdlm


def test_remote_code_checkpoint_loads_with_plain_transformers(tiny_mdlm_dir):
    """In a fresh interpreter without depmask, transformers runs the checkpoint's own code."""
    x = torch.randint(0, 37, (2, 9))
    torch.save(x, tiny_mdlm_dir / "x.pt")
    script = (
        "import sys, torch; from transformers import AutoModel\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True, local_files_only=True)\n"
        "assert 'depmask' not in sys.modules\n"
        "print(type(m).__module__)\n"
        "torch.save(m(torch.load(sys.argv[1] + '/x.pt')).logits, sys.argv[1] + '/y.pt')\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tiny_mdlm_dir / "hf_modules")}
    done = subprocess.run([sys.executable, "-c", script, str(tiny_mdlm_dir)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("transformers_modules"), done.stdout
    assert torch.allclose(torch.load(tiny_mdlm_dir / "y.pt"), tiny_mdlm()(x).logits, atol=1e-6)


def test_from_pretrained_remote_code(tiny_mdlm_dir):
    den = HFDenoiser.from_pretrained(tiny_mdlm_dir)
    assert isinstance(den, Denoiser)
    assert (den.mask_id, den.eos_ids, den.vocab_size, den.hidden_size) == (39, (38,), 40, 32)
    assert not den.logits_shift
    out = den(torch.randint(0, 37, (2, 9)), need_hidden=True, need_attention=True)
    assert out.logits.dtype == torch.float32 and out.logits.shape == (2, 9, 40)
    assert out.hidden.shape == (2, 9, 32) and out.attention.shape == (2, 9, 9)
    assert torch.allclose(out.attention.sum(-1), torch.ones(2, 9), atol=1e-5)


def test_bf16_model_still_returns_float32_logits(tiny_mdlm_dir):
    den = HFDenoiser.from_pretrained(tiny_mdlm_dir, dtype="bfloat16")
    assert den.dtype == torch.bfloat16
    assert den(torch.randint(0, 37, (1, 5))).logits.dtype == torch.float32


def test_dream_shift_is_detected_and_undone_once_for_all_outputs(tiny_dream_dir, tiny_mdlm_dir):
    dream = HFDenoiser.from_pretrained(tiny_dream_dir)
    raw = HFDenoiser.from_pretrained(tiny_dream_dir, logits_shift=False)
    assert dream.logits_shift and not raw.logits_shift
    x = torch.randint(0, 37, (2, 11))
    a = dream(x, need_hidden=True, need_attention=True)
    r = raw(x, need_hidden=True, need_attention=True)
    for got, base in ((a.logits, r.logits), (a.hidden, r.hidden), (a.attention, r.attention)):
        assert torch.equal(got[:, 1:], base[:, :-1]), "row i must be the raw row i - 1"
        assert torch.equal(got[:, 0], base[:, 0])
    # attention columns are keys and stay where they are: rows still sum to one
    assert torch.allclose(a.attention.sum(-1), torch.ones(2, 11), atol=1e-5)
    # the capture ran inside the checkpoint's own (remote) code and matches its eager maps
    assert type(raw.model).__module__.startswith("transformers_modules")
    eager = raw.model(x, output_attentions=True).attentions[-1].mean(1)
    assert (r.attention - eager).abs().max() < 1e-5


def test_masked_lm_needs_a_mask_id_and_says_where_it_looked(tiny_bert_dir):
    with pytest.raises(ValueError) as err:
        HFDenoiser.from_pretrained(tiny_bert_dir)
    msg = str(err.value)
    for where in ("`mask_id` argument", "tokenizer.mask_token_id", "config.mask_token_id", "vocabulary"):
        assert where in msg
    den = HFDenoiser.from_pretrained(tiny_bert_dir, mask_id=4)
    assert den.mask_id == 4 and den(torch.randint(5, 50, (1, 6))).logits.shape == (1, 6, 50)


def test_hub_ids_and_missing_paths_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        HFDenoiser.from_pretrained("GSAI-ML/LLaDA-8B-Instruct")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        HFDenoiser.from_pretrained(tmp_path / "nope")


def test_a_device_this_machine_cannot_use_is_named_before_loading(tiny_mdlm_dir):
    with pytest.raises(ValueError, match=r"`device` \('cdua'\) is not a torch device"):
        HFDenoiser.from_pretrained(tiny_mdlm_dir, device="cdua")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"`device` \('cuda'\) asks for CUDA, which this torch cannot use"):
            HFDenoiser.from_pretrained(tiny_mdlm_dir, device="cuda")
    else:
        n = torch.cuda.device_count()
        with pytest.raises(ValueError, match=rf"this machine has {n} CUDA device"):
            HFDenoiser.from_pretrained(tiny_mdlm_dir, device=f"cuda:{n}")
    assert HFDenoiser.from_pretrained(tiny_mdlm_dir, device=None).device == torch.device("cpu")


def test_a_head_directory_given_as_the_model_is_named(tmp_path):
    from depmask.predictor import DependencyHead

    head = DependencyHead(hidden_size=8, dim=8, heads=2, layers=0, base_fingerprint="m@local:x").save_pretrained(tmp_path / "h")
    with pytest.raises(ValueError, match=r"holds a dependency head, not a model: .*`--policy.head .*h`"):
        HFDenoiser.from_pretrained(head)


@pytest.mark.parametrize("mask_id", [-3, 40])
def test_a_mask_id_outside_the_vocabulary_is_named(tiny_mdlm_dir, mask_id):
    with pytest.raises(ValueError, match=rf"`mask_id` \({mask_id}\) must be a token id in \[0, 40\)"):
        HFDenoiser.from_pretrained(tiny_mdlm_dir, mask_id=mask_id)


def test_capture_layers_outside_the_model_are_named_at_load(tiny_mdlm_dir):
    # at load, not at the first attention forward (a harvest had written its record by then)
    with pytest.raises(ValueError, match=r"`capture_layers` \(\[4\]\) must be non-empty indices into the 4 layers"):
        HFDenoiser.from_pretrained(tiny_mdlm_dir, capture_layers=[4])
    assert HFDenoiser.from_pretrained(tiny_mdlm_dir, capture_layers=[-1]).capture.layers == [3]


def test_bad_dtype_is_named(tiny_mdlm_dir):
    with pytest.raises(ValueError, match="`dtype` \\('float17'\\)"):
        HFDenoiser.from_pretrained(tiny_mdlm_dir, dtype="float17")


def test_fingerprint_tells_models_apart():
    a, b = HFDenoiser(tiny_mdlm(0)), HFDenoiser(tiny_mdlm(1))
    assert a.fingerprint == HFDenoiser(tiny_mdlm(0)).fingerprint
    assert a.fingerprint != b.fingerprint  # same config, other weights
    assert a.fingerprint != HFDenoiser(tiny_mdlm(0, num_hidden_layers=3)).fingerprint


def test_padding_does_not_change_a_rows_predictions():
    den = HFDenoiser(tiny_mdlm())
    x = torch.randint(0, 37, (1, 8))
    padded = torch.cat([torch.full((1, 3), 37), x], dim=1)
    am = torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], dim=1)
    alone = den(x, need_attention=True)
    pad = den(padded, am, need_attention=True)
    assert torch.allclose(pad.logits[:, 3:], alone.logits, atol=1e-5)
    assert torch.allclose(pad.attention[:, 3:, 3:], alone.attention, atol=1e-5)
    assert pad.attention[:, 3:, :3].abs().max() == 0  # padding is never attended


def test_left_padding_keeps_learned_absolute_positions(tiny_bert_dir):
    """BERT numbers positions from the first column unless given `position_ids`: a left-padded row
    used to be read at shifted positions, so its predictions depended on its batch-mates' lengths
    (max |Δ logit| 0.35, 5 of 8 argmaxes changed). Each row now counts from its first real token."""
    den = HFDenoiser.from_pretrained(tiny_bert_dir, mask_id=4)
    x = torch.randint(5, 50, (1, 8), generator=torch.Generator().manual_seed(0))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
    am = torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], dim=1)
    assert torch.allclose(den(padded, am).logits[:, 3:], den(x).logits, atol=1e-5)


def test_a_model_that_numbers_its_own_positions_is_left_to_it(tmp_path):
    """RoBERTa counts positions from its input ids, skipping padding (from padding_idx + 1): given
    0-based `position_ids` it read every row at the wrong positions (max |Δ logit| 0.29)."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1)
    den = HFDenoiser(RobertaForMaskedLM(cfg).eval(), mask_id=4)
    x = torch.randint(5, 50, (1, 8), generator=torch.Generator().manual_seed(0))
    padded = torch.cat([torch.ones(1, 3, dtype=torch.long), x], dim=1)  # RoBERTa's pad id
    am = torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], dim=1)
    assert torch.allclose(den(padded, am).logits[:, 3:], den(x).logits, atol=1e-5)
    assert torch.allclose(den(x, torch.ones(1, 8)).logits, den(x).logits, atol=1e-6)


def test_a_dream_model_gets_its_padded_batch_mask_as_dream_generates_it(tiny_dream_dir):
    """Dream hands `attention_mask` to SDPA as given, and its `generate` passes a `[b, 1, l, l]`
    bool mask: the `[b, l]` long mask crashed Dream's SDPA on every padded batch (the shipped Dream
    eval configs decode 8 prompts of different lengths at once). The stand-in refuses it as SDPA does."""
    den = HFDenoiser.from_pretrained(tiny_dream_dir)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    policy = build_policy("threshold", threshold=0.2)
    batch = generate(den, prompts, policy, gen_length=8, block_length=4, steps=8)
    for i, p in enumerate(prompts):
        alone = generate(den, [p], policy, gen_length=8, block_length=4, steps=8)
        assert batch.generated[i].tolist() == alone.generated[0].tolist()


def test_decode_batch_equals_rows_alone_on_a_real_model():
    den = HFDenoiser(tiny_mdlm())
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    policy = build_policy("threshold", threshold=0.2)
    batch = generate(den, prompts, policy, gen_length=8, block_length=4, steps=8)
    for i, p in enumerate(prompts):
        alone = generate(den, [p], policy, gen_length=8, block_length=4, steps=8)
        assert batch.generated[i].tolist() == alone.generated[0].tolist()


def test_shipped_checkpoint_carries_the_current_modeling_code():
    """models/tiny-tasks holds copies of the modeling files (remote code, as LLaDA ships); they
    must not drift from the package's, or plain-transformers users run other code."""
    from pathlib import Path

    import depmask.models.tiny_mdlm as pkg
    from depmask.models.tiny_mdlm import REMOTE_CODE_FILES
    from tests.conftest import EMBEDDED

    for name in REMOTE_CODE_FILES:
        assert (EMBEDDED / name).read_text() == (Path(pkg.__file__).parent / name).read_text(), name


def test_tokenizer_files_that_do_not_load_are_named(tmp_path):
    """A truncated tokenizer.json was taken for "no tokenizer": `eval decode` then said the model
    had no tokenizer files."""
    import shutil

    from tests.conftest import EMBEDDED

    model = tmp_path / "m"
    shutil.copytree(EMBEDDED, model)
    (model / "tokenizer.json").write_text((model / "tokenizer.json").read_text()[:200])
    with pytest.warns(UserWarning, match=r"the tokenizer files in .* could not be loaded"):
        den = HFDenoiser.from_pretrained(model)
    assert den.tokenizer is None


def test_mps_is_refused_by_name():
    # decoding's step statistics are float64, which MPS lacks: every decode failed after the load
    from depmask.models.hf_denoiser import check_device

    with pytest.raises(ValueError, match=r"`device` \('mps'\): decoding computes its step statistics in float64"):
        check_device("mps")


def test_a_roberta_row_reads_the_same_whatever_fills_its_padding():
    # RoBERTa numbers positions from the ids equal to its pad id, not from the attention mask;
    # `generate` pads with EOS (2), so the denoiser writes the pad id (1) into padding columns
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2)
    den = HFDenoiser(RobertaForMaskedLM(cfg).eval(), mask_id=4)
    x = torch.randint(5, 50, (1, 8), generator=torch.Generator().manual_seed(0))
    alone = den(x).logits
    am = torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], dim=1)
    for fill in (1, 2, 0):  # was 0.244 off for 2 and 0
        padded = torch.cat([torch.full((1, 3), fill), x], dim=1)
        torch.testing.assert_close(den(padded, am).logits[:, 3:], alone, atol=1e-5, rtol=1e-5)


def test_a_trunk_without_an_lm_head_is_refused(tiny_mdlm_dir):
    # LLaDA2's layout: AutoModel is the headless trunk, AutoModelForCausalLM the LM; the LM is taken
    (tiny_mdlm_dir / "modeling_tiny_headless.py").write_text(
        "from transformers.modeling_outputs import BaseModelOutput\n"
        "from .modeling_tiny_mdlm import TinyMDLMModel\n"
        "class TinyHeadless(TinyMDLMModel):\n"
        "    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, **kw):\n"
        "        x, hidden, _ = super().forward(input_ids, attention_mask, output_hidden_states)\n"
        "        return BaseModelOutput(last_hidden_state=x, hidden_states=hidden)\n")
    cfg = json.loads((tiny_mdlm_dir / "config.json").read_text())
    cfg["model_type"] = "tiny_headless"
    cfg["auto_map"] = {"AutoConfig": "configuration_tiny_mdlm.TinyMDLMConfig",
                       "AutoModel": "modeling_tiny_headless.TinyHeadless",
                       "AutoModelForCausalLM": "modeling_tiny_mdlm.TinyMDLMForMaskedLM"}
    (tiny_mdlm_dir / "config.json").write_text(json.dumps(cfg))
    den = HFDenoiser.from_pretrained(tiny_mdlm_dir)
    assert type(den.model).__name__ == "TinyMDLMForMaskedLM"
    assert den(torch.zeros(1, 4, dtype=torch.long)).logits.shape[-1] == den.vocab_size
    cfg["auto_map"].pop("AutoModelForCausalLM")  # only the trunk: its hidden states are not logits
    (tiny_mdlm_dir / "config.json").write_text(json.dumps(cfg))
    den = HFDenoiser.from_pretrained(tiny_mdlm_dir)
    with pytest.raises(ValueError, match="TinyHeadless returned .* not a model with a language-model head"):
        den(torch.zeros(1, 4, dtype=torch.long))


def test_a_shifted_model_refuses_an_empty_prompt(tiny_dream_dir):
    den = HFDenoiser.from_pretrained(tiny_dream_dir)
    assert den.logits_shift
    for prompts in ([[]], [[5, 6, 7], []]):
        with pytest.raises(ValueError, match=r"prompt \d is empty.*logits_shift"):
            generate(den, prompts, build_policy("low_confidence"), gen_length=4, block_length=4, steps=4)
    generate(den, [[5]], build_policy("low_confidence"), gen_length=4, block_length=4, steps=4)
