"""Values (not shapes) that `HFDenoiser` and attention capture hand on: the hidden state the LM
head reads, the EOS ids, the pairwise mask a Dream model gets, the softmax scale and the head
count attention is averaged over. Expected values are derived by hand from the documented contract."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from depmask.models import HFDenoiser
from depmask.models.attention_capture import AttentionCapture, explicit_attention
from depmask.models.hf_denoiser import resolve_eos_ids
from tests.models.conftest import tiny_mdlm


def test_hidden_is_the_final_hidden_state_the_lm_head_reads():
    """`hidden` must be the *final* hidden state (the one the LM head turns into the logits), not the
    embeddings or an earlier layer's: dependency-head features are built from it."""
    model = tiny_mdlm()
    den = HFDenoiser(model)
    x = torch.randint(0, 37, (2, 7))
    out = den(x, need_hidden=True)
    # the LM head (untied, no bias) applied to the final hidden state gives the logits
    assert torch.allclose(model.lm_head(out.hidden), out.logits, atol=1e-5)
    assert not torch.allclose(out.hidden, model.model.embed_tokens(x), atol=1e-3)


def test_eos_ids_collect_config_tokenizer_and_end_of_turn_tokens():
    """A completion ends at any end token: the config's, the tokenizer's EOS and the end-of-turn
    strings found in the vocabulary (<|eot_id|>, <|endoftext|>, ...), each once, in that order.
    Dropping the end-of-turn ones lets an instruct model run past its turn."""
    vocab = {"a": 0, "<|eot_id|>": 5, "<|endoftext|>": 6, "<|im_end|>": 2, "b": 7}
    tok = SimpleNamespace(eos_token_id=3, get_vocab=lambda: vocab)
    assert resolve_eos_ids(tok, SimpleNamespace(eos_token_id=[2, 9])) == (2, 9, 3, 5, 6)
    assert resolve_eos_ids(None, SimpleNamespace(eos_token_id=4)) == (4,)
    no_eos = SimpleNamespace(eos_token_id=None, get_vocab=lambda: {"<|im_end|>": 11})
    assert resolve_eos_ids(no_eos, SimpleNamespace(eos_token_id=None)) == (11,)


class _SpyDream(nn.Module):
    """Records the keyword arguments of its forward; logits row i = one-hot of i (so the shift
    shows), vocabulary 8."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(model_type="dream", architectures=["DreamModel"], vocab_size=8,
                                      hidden_size=4, mask_token_id=7, eos_token_id=6, pad_token_id=None)
        self.proj = nn.Linear(4, 8)
        self.seen = {}

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):
        self.seen = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        b, l = input_ids.shape
        logits = torch.zeros(b, l, 8)
        logits[:, torch.arange(l), torch.arange(l) % 8] = 1.0
        return SimpleNamespace(logits=logits)


def test_a_dream_model_gets_query_and_key_masked_pairwise_and_positions_from_its_first_token():
    """Dream's own `generate` builds `mask[b, 0, q, k] = real[q] and real[k]` and position ids that
    count from each row's first real token; a key-only mask (`real[k]`) lets padding query rows
    attend, unlike Dream's, and those rows are what the shift copies onto a row's first token."""
    spy = _SpyDream()
    den = HFDenoiser(spy, fingerprint="spy")
    assert den.logits_shift
    am = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    out = den(torch.tensor([[6, 6, 1, 2], [1, 2, 3, 4]]), attention_mask=am)
    mask = spy.seen["attention_mask"]
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 4, 4)
    F_, T_ = False, True
    assert mask[0, 0].tolist() == [[F_, F_, F_, F_], [F_, F_, F_, F_], [F_, F_, T_, T_], [F_, F_, T_, T_]]
    assert mask[1, 0].all()
    assert spy.seen["position_ids"].tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    # row i holds the raw row i - 1 (row 0 its own): argmax of raw row r is r
    assert out.logits.argmax(-1).tolist() == [[0, 0, 1, 2], [0, 0, 1, 2]]


def test_explicit_attention_uses_the_scale_it_is_given():
    """With `scale=0` every score is 0, so each head attends uniformly: the head-summed
    probabilities are h / k everywhere (the default 1/sqrt(e) would not give that)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 3, 8, generator=g) for _ in range(3))
    _, probs = explicit_attention(q, k, v, scale=0.0, need_output=False)
    assert torch.allclose(probs, torch.full((2, 3, 3), 4 / 3))
    out, probs = explicit_attention(q, k, v, scale=0.5)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.5)
    assert torch.allclose(out, ref, atol=1e-5)


class _GQABlock(nn.Module):
    """4 query heads over 2 key/value heads; queries are zero, so attention is uniform (1/l)."""

    def __init__(self):
        super().__init__()
        self.kv = nn.Linear(4, 2 * 2 * 4)

    def forward(self, x):
        b, l, _ = x.shape
        kv = self.kv(x).view(b, l, 2, 2, 4).permute(2, 0, 3, 1, 4)  # [2, b, g, l, e]
        q = torch.zeros(b, 4, l, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], enable_gqa=True)  # [b, 4, l, 4]
        return x + out.mean(1)


class _GQAModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(_GQABlock() for _ in range(4))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_capture_averages_over_query_heads_of_a_grouped_query_model():
    """The capture is a mean over layers and *query* heads: each query head contributes a
    probability row, so rows sum to 1. Dividing by the key/value heads (2) instead of the query
    heads (4) doubles every weight of a GQA model (LLaDA-MoE, Dream's Qwen2 base)."""
    model = _GQAModel().eval()
    cap = AttentionCapture(model, [2, 3])
    with torch.no_grad(), cap.capturing():
        model(torch.randn(2, 5, 4))
    att = cap.result()
    assert torch.allclose(att, torch.full((2, 5, 5), 1 / 5))


def test_the_mask_id_comes_from_the_argument_then_the_tokenizer_then_the_config():
    """The documented order: argument, tokenizer, config, tokenizer vocabulary. A config naming
    another id than the tokenizer (a retokenised checkpoint) must not win over the tokenizer."""
    from depmask.models.hf_denoiser import resolve_mask_id

    tok = SimpleNamespace(mask_token_id=5, get_vocab=lambda: {"<|mdm_mask|>": 7})
    cfg = SimpleNamespace(mask_token_id=9)
    assert resolve_mask_id(3, tok, cfg) == 3
    assert resolve_mask_id(None, tok, cfg) == 5
    assert resolve_mask_id(None, None, cfg) == 9
    assert resolve_mask_id(None, SimpleNamespace(mask_token_id=None, get_vocab=tok.get_vocab), SimpleNamespace()) == 7


class _TwiceBlock(nn.Module):
    """A layer that calls SDPA twice (e.g. self- and cross-attention): not one map per layer."""

    def forward(self, x):
        q = x[:, None]  # [b, 1, l, e]
        return x + F.scaled_dot_product_attention(q, q, q)[:, 0] + F.scaled_dot_product_attention(q, q, q)[:, 0]


def test_a_layer_that_calls_attention_more_than_once_is_refused():
    """The capture averages one attention map per captured layer; a layer stack whose layers call
    SDPA twice is not that stack, and `result()` must raise rather than average the extra maps."""
    model = nn.Sequential()
    model.layers = nn.ModuleList(_TwiceBlock() for _ in range(4))
    cap = AttentionCapture(model, [3])
    with torch.no_grad(), cap.capturing():
        x = torch.randn(1, 3, 4)
        for layer in model.layers:
            x = layer(x)
    with pytest.raises(RuntimeError, match="saw 2 attention calls in the 1 captured layers"):
        cap.result()
