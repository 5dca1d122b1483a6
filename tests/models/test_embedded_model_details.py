"""The embedded tiny MDLM's own code, pinned by value: a from-scratch reference forward (pre-norm
blocks, RMSNorm with its weight, rotate-half RoPE on q and k only, SwiGLU, no causal mask, untied
head), the length limit, `output_hidden_states`, the loss, the initialisation and the config's
checks; plus the prompt-side details (tokenizer, chat encoding, benchmark prompts) that the
other tests leave open. Tiny random models (milliseconds each); expected values by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from depmask.models.tiny_mdlm import TinyMDLMConfig
from tests.models.conftest import TINY, tiny_mdlm


def _perturbed(seed: int = 0, **overrides):
    """A tiny model whose norm weights are not all ones, so a dropped or swapped norm shows."""
    model = tiny_mdlm(seed, **overrides)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
    return model


def _reference_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """The documented architecture written out from the weights (no attention mask)."""
    cfg = model.config
    sd = {k: v.float() for k, v in model.state_dict().items()}
    b, l = ids.shape
    h, d = cfg.num_attention_heads, cfg.hidden_size
    e = d // h

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * w

    def heads(t):  # [b, l, d] -> [b, h, l, e]
        return t.reshape(b, l, h, e).permute(0, 2, 1, 3)

    inv = cfg.rope_theta ** (-torch.arange(0, e, 2, dtype=torch.float32) / e)  # [e/2]
    ang = torch.arange(l, dtype=torch.float32)[:, None] * inv  # [l, e/2]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rot(t):
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        y = norm(x, sd[p + "attn_norm.weight"])
        q = rot(heads(y @ sd[p + "attn.q_proj.weight"].T))
        k = rot(heads(y @ sd[p + "attn.k_proj.weight"].T))
        v = heads(y @ sd[p + "attn.v_proj.weight"].T)
        att = ((q @ k.transpose(-1, -2)) / e**0.5).softmax(-1) @ v  # every key: bidirectional
        x = x + att.permute(0, 2, 1, 3).reshape(b, l, d) @ sd[p + "attn.o_proj.weight"].T
        y = norm(x, sd[p + "ff_norm.weight"])
        gate, up = y @ sd[p + "gate_proj.weight"].T, y @ sd[p + "up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ sd[p + "down_proj.weight"].T
    return norm(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T


@pytest.mark.parametrize("output_attentions", [False, True])
def test_forward_equals_a_from_scratch_reference(output_attentions):
    """Both attention paths (fused SDPA and the explicit softmax) compute the documented
    LLaDA-shaped transformer: a dropped residual or norm, RoPE on v or not on k, the rotation's
    sign or cos/sin swapped, a mis-split head, the SwiGLU halves swapped all change the logits."""
    model = _perturbed()
    ids = torch.randint(0, 37, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(ids, output_attentions=output_attentions).logits
        want = _reference_logits(model, ids)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_attention_is_bidirectional_in_both_paths():
    """No causal mask: the first row's prediction depends on the last token, with or without an
    attention mask, and the explicit-softmax path gives the fused path's logits."""
    model = tiny_mdlm()
    ids = torch.randint(0, 37, (1, 8), generator=torch.Generator().manual_seed(2))
    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % 37
    am = torch.ones(1, 8, dtype=torch.long)
    with torch.no_grad():
        for kw in ({}, {"attention_mask": am}, {"output_attentions": True}):
            a, b = model(ids, **kw).logits, model(other, **kw).logits
            assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4, kw
        fused = model(ids).logits
        explicit = model(ids, output_attentions=True)
    assert torch.allclose(explicit.logits, fused, atol=1e-5)
    for probs in explicit.attentions:  # full [b, h, l, l] maps, every key weighted
        assert probs.shape == (1, 4, 8, 8) and bool((probs > 0).all())


def test_a_sequence_of_exactly_max_position_embeddings_is_allowed_one_more_is_refused():
    """`max_position_embeddings` is the longest sequence the model takes: `l == max` runs,
    `l == max + 1` is refused by name (RoPE would silently extrapolate)."""
    model = tiny_mdlm(max_position_embeddings=8)
    with torch.no_grad():
        assert model(torch.zeros(1, 8, dtype=torch.long)).logits.shape == (1, 8, 40)
        with pytest.raises(ValueError, match=r"sequence length \(9\) exceeds `max_position_embeddings` \(8\)"):
            model(torch.zeros(1, 9, dtype=torch.long))


def test_hidden_states_are_the_embeddings_then_each_layers_input_then_the_normed_output():
    """`output_hidden_states`: layers + 1 states, the first the token embeddings, state i + 1 what
    layer i makes of state i, the last the final-normed state the LM head reads."""
    model = _perturbed()
    ids = torch.randint(0, 37, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        hs = out.hidden_states
        trunk = model.model
        assert len(hs) == model.config.num_hidden_layers + 1
        assert torch.equal(hs[0], trunk.embed_tokens(ids))
        positions = torch.arange(6).expand(2, 6)
        x = hs[0]
        for i, layer in enumerate(trunk.layers[:-1]):
            x, _ = layer(x, positions, None)
            assert torch.allclose(hs[i + 1], x, atol=1e-5), i
        x, _ = trunk.layers[-1](x, positions, None)
        assert torch.allclose(hs[-1], trunk.norm(x), atol=1e-5)
        assert torch.allclose(model.lm_head(hs[-1]), out.logits, atol=1e-5)


def test_the_loss_ignores_minus_100_and_counts_every_other_label():
    """Labels of -100 are left out of the mean cross-entropy; any real id (the pad id 0 too) counts."""
    model = tiny_mdlm()
    ids = torch.randint(0, 37, (1, 6), generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([[-100, 0, 5, -100, 0, 7]])
    with torch.no_grad():
        out = model(ids, labels=labels)
        logp = out.logits.float().log_softmax(-1)[0]
    keep = [1, 2, 4, 5]
    want = -torch.stack([logp[i, labels[0, i]] for i in keep]).mean()
    assert torch.allclose(out.loss, want, atol=1e-6)


def test_fresh_weights_follow_initializer_range():
    """A freshly built model (what `depmask.train` starts from) has every linear and embedding
    weight drawn with std `initializer_range`, and its norms at one."""
    model = tiny_mdlm(initializer_range=0.02, vocab_size=400, hidden_size=64, intermediate_size=128)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert 0.015 < p.std().item() < 0.025, (name, p.std().item())


def test_config_refuses_heads_that_do_not_divide_the_hidden_size():
    with pytest.raises(ValueError, match=r"`hidden_size` \(30\) must be divisible by `num_attention_heads` \(4\)"):
        TinyMDLMConfig(**{**TINY, "hidden_size": 30})


def test_config_defaults_are_the_documented_llada_shaped_ones():
    """`depmask.train` builds its config without `rope_theta` / `rms_norm_eps`: the defaults are
    what every freshly trained tiny model gets (a changed default changes all of them silently)."""
    cfg = TinyMDLMConfig()
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.initializer_range) == (10000.0, 1e-5, 0.02)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.intermediate_size, cfg.max_position_embeddings) == (64, 128, 4, 4, 344, 128)
    assert (cfg.mask_token_id, cfg.pad_token_id, cfg.eos_token_id) == (None, None, None)


# ---- tokenizer ----------------------------------------------------------------------------------

def test_tokenizer_specials_keep_ids_0_to_3_even_when_passed_as_symbols():
    """A special passed among the symbols is not given a second id: `[EOS]` stays 3, words follow sorted."""
    from depmask.models.tiny_mdlm.tokenizer import build_tokenizer

    tok = build_tokenizer(["b", "[EOS]", "a", "[MASK]"])
    assert tok.get_vocab() == {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "[EOS]": 3, "a": 4, "b": 5}
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert tok.padding_side == "right"
    assert tok(["a", "a b"], padding=True)["input_ids"] == [[4, 0], [4, 5]]


@pytest.mark.parametrize("symbols", [["a", "b c"], ["a", ""], ["a\tb"]])
def test_tokenizer_refuses_empty_or_whitespace_symbols(symbols):
    from depmask.models.tiny_mdlm.tokenizer import build_tokenizer

    with pytest.raises(ValueError, match="non-empty and contain no whitespace"):
        build_tokenizer(symbols)


# ---- prompt text --------------------------------------------------------------------------------

def test_a_trailing_mask_is_kept_in_the_completion_tokens():
    """Only trailing `[EOS]` / `[PAD]` are dropped: a `[MASK]` left at the end stays, so the verifier
    rejects the unfinished completion."""
    from depmask.tasks.text import completion_tokens

    assert completion_tokens("1 2 [MASK]") == ["1", "2", "[MASK]"]
    assert completion_tokens("1 [MASK] [EOS] [PAD] [EOS]") == ["1", "[MASK]"]


class _Tok:
    """A stand-in HF tokenizer: characters as ids, BOS (1) only when special tokens are added."""

    def __init__(self, template=None):
        self.chat_template = template

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": self.encode(text, add_special_tokens)}


def test_encode_prompt_adds_no_special_tokens_and_names_the_option():
    """`encode_prompt` never adds a BOS (the template carries its own; plain text goes as written),
    and a chat request for a tokenizer without a template names the option it came from."""
    from depmask.tasks.chat import encode_prompt

    chat = _Tok("{{ fake }}")
    assert encode_prompt("hi", chat, chat=True) == [ord(c) for c in "<user>hi</user><assistant>"]
    assert encode_prompt("hi", chat, chat=False) == [ord("h"), ord("i")]
    assert encode_prompt("hi", _Tok(), chat=None) == [ord("h"), ord("i")]
    with pytest.raises(ValueError, match="`prompts_chat` is true"):
        encode_prompt("hi", _Tok(), chat=True, option="prompts_chat")
    assert encode_prompt("hi", _Tok(""), chat=None) == [ord("h"), ord("i")]  # an empty template is none


# ---- benchmark prompts --------------------------------------------------------------------------

@pytest.fixture
def gsm8k_path(tmp_path, monkeypatch):
    from tests.tasks.benchmark_rows import ENV_VARS, GSM8K_ROWS, _jsonl

    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return _jsonl(tmp_path / "test.jsonl", GSM8K_ROWS)


def test_chat_messages_carry_the_shots_asked_for(gsm8k_path):
    """`shots` given to `prompt_text` / `messages` reaches the user message, whatever the default."""
    from depmask.tasks.benchmarks import GSM8K

    bench = GSM8K(path=gsm8k_path, system_prompt="Be brief.")
    ex = bench.examples(n=1)[0]
    (system, user) = bench.messages(ex, shots=2)
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"].count("Question:") == 3 and user["content"].endswith("Answer:")
    assert bench.prompt_text(ex, _Tok("t"), shots=2).count("Question:") == 3
    assert bench.messages(ex)[1]["content"].count("Question:") == 0


def test_the_benchmarks_own_chat_setting_decides_when_none_is_passed(gsm8k_path):
    """`chat=False` at construction keeps a chat tokenizer's prompts plain (with the tokenizer's BOS);
    `chat=True` with a tokenizer without a template is refused."""
    from depmask.tasks.benchmarks import GSM8K

    plain = GSM8K(path=gsm8k_path, chat=False)
    ex = plain.examples(n=1)[0]
    text = plain.prompt_text(ex, _Tok("t"))
    assert text == plain.prompt_text(ex) and not text.startswith("<user>")
    assert plain.prompt_ids(ex, _Tok("t")) == [1, *map(ord, text)]
    with pytest.raises(ValueError, match="no chat template"):
        GSM8K(path=gsm8k_path, chat=True).prompt_text(ex, _Tok())


def test_examples_draws_are_pinned_and_n_is_checked(gsm8k_path):
    """The draw for a seed is seeded by `name:split:seed`: pinned so a seed selects the same items
    as in earlier runs. A negative `n` is refused, not read as "all but the last"."""
    from depmask.tasks.benchmarks import GSM8K

    bench = GSM8K(path=gsm8k_path)
    assert [e.id for e in bench.examples(n=5, seed=0)] == [f"gsm8k:test:{i}" for i in (0, 2, 7, 8, 3)]
    with pytest.raises(ValueError, match=r"`n` \(-1\) must be >= 0"):
        bench.examples(n=-1)


def test_canvas_defaults_shot_limits_and_grading_lengths(gsm8k_path):
    from depmask.tasks.benchmarks import GSM8K

    bench = GSM8K(path=gsm8k_path)
    assert (bench.gen_length, bench.block_length, bench.shots) == (256, 32, 0)
    assert GSM8K(path=gsm8k_path, shots=GSM8K.max_shots).shots == GSM8K.max_shots
    with pytest.raises(ValueError, match="shots"):
        GSM8K(path=gsm8k_path, shots=GSM8K.max_shots + 1)
    with pytest.raises(ValueError, match="shots"):
        bench.prompt_text(bench.examples(n=1)[0], shots=-1)
    with pytest.raises(ValueError, match="1 examples but 0 completions"):
        bench.grade(bench.examples(n=1), [])


def test_clean_cuts_at_eos_and_at_a_next_question_only_when_few_shot(gsm8k_path):
    """`[EOS]` ends every completion; `Question:` ends one only few-shot and only at a line start."""
    from depmask.tasks.benchmarks import GSM8K

    zero, few = GSM8K(path=gsm8k_path), GSM8K(path=gsm8k_path, shots=2)
    text = "So 5. The Question: is 5.\nQuestion: next"
    assert zero.clean(text + "[EOS] junk") == text
    assert few.clean(text) == "So 5. The Question: is 5.\n"


def test_a_boolean_field_is_not_text():
    from depmask.tasks.benchmarks.base import text_field

    with pytest.raises(TypeError, match="`answer` must be text, got bool"):
        text_field({"answer": True}, "answer", numbers=True)
    assert text_field({"answer": 7}, "answer", numbers=True) == "7"


def test_importing_depmask_registers_tiny_mdlm_with_the_auto_classes():
    """`AutoConfig`, `AutoModel` and `AutoModelForMaskedLM` build the package's own classes (not a
    checkpoint's remote copy, not the bare trunk) for `tiny_mdlm`."""
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    from depmask.models.tiny_mdlm import TinyMDLMForMaskedLM

    cfg = AutoConfig.for_model("tiny_mdlm", **TINY)
    assert type(cfg) is TinyMDLMConfig
    for auto in (AutoModel, AutoModelForMaskedLM):
        assert type(auto.from_config(cfg)) is TinyMDLMForMaskedLM, auto.__name__
