"""Details of the dependency scorers, the `DependencyHead` internals they read, and the model
wrapper's config handling that the broader tests leave loose: which direction a matrix or a
distance bias points, what a pooled summary averages, which inputs are refused, and which config
fields the wrapper reads."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from depmask.decoding.scorers import AttentionScorer, HeadScorer, NoneScorer, OracleScorer
from depmask.decoding.scorers.base import block_slots
from depmask.models import HFDenoiser
from depmask.models.hf_denoiser import detect_logits_shift, resolve_mask_id
from depmask.predictor import DependencyHead
from depmask.predictor.head import _EncoderLayer, _RelativeSelfAttention, _SetContext
from tests.conftest import EMBEDDED
from tests.decoding.states import FakeHead, random_state

D = 16  # tiny hidden size


# --- the scorers ----------------------------------------------------------------------------------


def test_attention_scorer_block_is_the_attention_block_as_captured():
    """`score_block` (what the selector reads) is `A[:, s:e, s:e]` itself, row = query: not its
    transpose — the budget rule reads the matrix unsymmetrised."""
    state = random_state(3)
    s, e = state.block_start, state.block_end
    att = state.attention[:, s:e, s:e]
    assert not torch.equal(att, att.transpose(1, 2))  # the check below can tell the two apart
    assert torch.equal(AttentionScorer().score_block(state), att)


def test_none_scorer_is_float32_zeros_of_the_canvas():
    """The control scorer returns the float32 `[b, l, l]` zeros every other scorer's dtype matches."""
    state = random_state(0)
    d = NoneScorer().score(state)
    assert d.dtype == torch.float32 and d.shape == (4, 20, 20) and not d.any()
    assert NoneScorer().score_block(state).shape == (4, 12, 12)


def test_block_slots_lists_the_selected_columns_first_in_increasing_order():
    """On a block wide enough that an unstable sort reorders ties (≥ 32 columns), the selected
    masked columns come first in increasing order, the others after them in increasing order."""
    g = torch.Generator().manual_seed(0)
    b, l, s, e = 3, 50, 5, 45
    mask = torch.zeros(b, l, dtype=torch.bool)
    mask[:, s:e] = torch.rand(b, e - s, generator=g) < 0.6
    select = torch.rand(b, l, generator=g) < 0.7
    state = random_state(0, b=b, l=l, block=(s, e))
    state.mask = mask
    order, positions, valid = block_slots(state, select)
    chosen = mask[:, s:e] & select[:, s:e]
    for r in range(b):
        picked = chosen[r].nonzero().flatten().tolist()
        rest = (~chosen[r]).nonzero().flatten().tolist()
        assert order[r].tolist() == picked + rest
        n = len(picked)
        assert positions[r, :n].tolist() == [s + c for c in picked]
        assert valid[r].tolist() == [True] * n + [False] * (valid.shape[1] - n)


@pytest.mark.parametrize("knobs", [{"chunk_size": True}, {"memory_budget_mb": True}, {"memory_budget_mb": 1.5}])
def test_oracle_refuses_a_bool_or_float_knob(knobs):
    """`True` is an int to Python, but not a chunk size nor a budget in MB: it is refused by name."""
    name = next(iter(knobs))
    with pytest.raises(ValueError, match=f"`{name}`"):
        OracleScorer(**knobs)


def test_head_scorer_without_hidden_states_names_the_field():
    """A state without hidden states is refused with a ValueError naming `state.hidden`, not a
    TypeError from slicing None."""
    state = random_state(1)
    state.hidden = None
    with pytest.raises(ValueError, match="state.hidden"):
        HeadScorer(FakeHead()).score_block(state)


# --- DependencyHead internals ---------------------------------------------------------------------


def _qkv(att: _RelativeSelfAttention, x: torch.Tensor):
    b, m, dim = x.shape
    q, k, v = att.qkv(x).view(b, m, 3, att.heads, dim // att.heads).permute(2, 0, 3, 1, 4)
    return q, k, v


def test_slot_attention_without_bias_or_padding_is_standard_multi_head_attention():
    """With a zero distance bias and every slot valid, the slot attention is
    `out(SDPA(q, k, v))` with the usual 1/sqrt(head width) scale."""
    torch.manual_seed(0)
    att = _RelativeSelfAttention(dim=16, heads=4, num_rel=9, dropout=0.0).eval()
    x = 3 * torch.randn(2, 5, 16)
    rel = torch.full((2, 5, 5), 4)
    valid = torch.ones(2, 5, dtype=torch.bool)
    q, k, v = _qkv(att, x)
    want = att.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(att(x, rel, valid), want, rtol=1e-5, atol=1e-5)


def test_the_distance_bias_is_indexed_by_query_then_key():
    """`rel[b, i, j]` (distance pos_j − pos_i) biases query i's score of key j: a large bias on
    distance +1 makes every slot but the last read its right-hand neighbour's value."""
    dim, m, maxd = 4, 5, 2
    att = _RelativeSelfAttention(dim=dim, heads=1, num_rel=2 * maxd + 1, dropout=0.0).eval()
    with torch.no_grad():
        att.qkv.weight.zero_()
        att.qkv.bias.zero_()
        att.qkv.weight[2 * dim:] = torch.eye(dim)  # v = x, q = k = 0
        att.out.weight.copy_(torch.eye(dim))
        att.out.bias.zero_()
        att.rel_bias.weight.zero_()
        att.rel_bias.weight[maxd + 1] = 50.0  # distance pos_j - pos_i = +1
    from depmask.predictor.features import relative_index

    positions = torch.arange(m)[None]
    valid = torch.ones(1, m, dtype=torch.bool)
    x = torch.randn(1, m, dim)
    out = att(x, relative_index(positions, valid, maxd), valid)
    torch.testing.assert_close(out[0, :-1], x[0, 1:], rtol=1e-4, atol=1e-4)


def test_encoder_sublayers_read_layer_normed_inputs():
    """Pre-LN: with the feed-forward zeroed, the update a layer adds is the same for `x` and `7x`
    (the attention reads `norm1(x)`); with the attention zeroed, likewise (the FFN reads `norm2`)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8)
    rel = torch.full((2, 4, 4), 2)
    valid = torch.ones(2, 4, dtype=torch.bool)
    for zero in ("ffn", "attn"):
        layer = _EncoderLayer(dim=8, heads=2, num_rel=5, dropout=0.0).eval()
        last = layer.ffn[-1] if zero == "ffn" else layer.attn.out
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
        with torch.no_grad():
            update = layer(x, rel, valid) - x
            scaled = layer(7 * x, rel, valid) - 7 * x
        torch.testing.assert_close(scaled, update, rtol=1e-4, atol=1e-4)


def test_set_context_adds_the_mean_and_log_count_of_the_valid_slots_to_them_only():
    """`_SetContext`: `u + proj([mean of valid slots, log(1 + count)])` on valid slots; padded slots
    are unchanged and do not count; a fully padded row stays finite (and unchanged)."""
    torch.manual_seed(0)
    ctx = _SetContext(4).eval()
    u = torch.randn(2, 3, 4)
    valid = torch.tensor([[True, False, True], [False, False, False]])
    with torch.no_grad():
        out = ctx(u, valid)
        want = ctx.proj(torch.cat([(u[0, 0] + u[0, 2]) / 2, torch.tensor([math.log(3.0)])]))
    torch.testing.assert_close(out[0, 0], u[0, 0] + want)
    torch.testing.assert_close(out[0, 2], u[0, 2] + want)
    assert torch.equal(out[0, 1], u[0, 1])
    assert torch.isfinite(out).all() and torch.equal(out[1], u[1])


def _inputs(b=2, m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, m, D, generator=g), torch.arange(m).repeat(b, 1), torch.ones(b, m, dtype=torch.bool),
            torch.rand(b, m, generator=g), torch.rand(b, m, generator=g))


@pytest.mark.parametrize("which", ["bool positions", "attention", "confidence", "entropy"])
def test_malformed_head_inputs_are_refused_by_name(which):
    """Bool positions, and an attention/confidence/entropy whose shape is not `hidden`'s `[b, m(, m)]`
    (same batch, other width), raise a ValueError naming the input."""
    head = DependencyHead(D, dim=8, layers=1, heads=2, max_distance=4, use_attention=True).eval()
    hidden, positions, valid, conf, ent = _inputs()
    attention = torch.rand(2, 4, 4)
    name = which.split()[-1]
    if which == "bool positions":
        positions = torch.ones(2, 4, dtype=torch.bool)
    elif which == "attention":
        attention = torch.rand(2, 4, 5)
    elif which == "confidence":
        conf = torch.rand(2, 5)
    else:
        ent = torch.rand(2, 3)
    with pytest.raises(ValueError, match=f"`{name}`"):
        head(hidden, positions, valid, conf, ent, attention)


def test_dropout_of_one_is_refused():
    """Dropout must lie in [0, 1): 1.0 would zero every activation during training."""
    with pytest.raises(ValueError, match="`dropout`"):
        DependencyHead(D, dim=8, heads=2, dropout=1.0)


def test_an_attention_heads_check_includes_its_capture_layers():
    """`check_compatible` refuses a denoiser that captures other layers than the head's harvest did
    (the training manifest's `capture_layers`), and passes the same layers."""
    head = DependencyHead(D, dim=8, layers=0, heads=2, use_attention=True, base_fingerprint="m@local:a-b")
    head.training_manifest = {"capture_layers": [0]}
    den = SimpleNamespace(fingerprint="m@local:a-b", hidden_size=D,
                          capture=SimpleNamespace(stack=[None] * 4, layers=[3]))
    with pytest.raises(ValueError, match="capture_layers"):
        head.check_compatible(den)
    den.capture.layers = [0]
    head.check_compatible(den)


# --- the model wrapper ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", [SimpleNamespace(model_type="qwen2", architectures=["DreamModel"]),
                                    SimpleNamespace(model_type="Dream", architectures=None)],
                         ids=["architecture", "capitalised"])
def test_a_dream_model_is_recognised_by_its_architecture_and_in_any_case(config):
    """The shift is detected from an architecture name as well as the model type, case-blind."""
    assert detect_logits_shift(config)
    assert not detect_logits_shift(SimpleNamespace(model_type="llada", architectures=["LLaDAModelLM"]))


class _Vocab:
    mask_token_id = None

    def get_vocab(self):
        return {"[MASK]": 3, "<|mdm_mask|>": 7, "a": 0}


def test_the_vocabulary_mask_strings_are_tried_in_their_order():
    """Without an argument, tokenizer or config id, the first of `MASK_STRINGS` in the vocabulary
    wins (`<|mdm_mask|>` before `[MASK]`)."""
    assert resolve_mask_id(None, _Vocab(), SimpleNamespace()) == 7


class _WideLM(nn.Module):
    """A masked LM whose head is wider than `config.vocab_size` (a padded embedding matrix)."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=8, embedding_size=12, hidden_size=4, model_type="toy")
        self.emb = nn.Embedding(12, 4)
        self.head = nn.Linear(4, 12)

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        h = self.emb(input_ids)
        return SimpleNamespace(logits=self.head(h), hidden_states=(h,))


def test_the_wrapper_reads_vocab_size_keeps_given_eos_ids_and_accepts_a_padded_head():
    """`vocab_size` wins over a padded `embedding_size`; `eos_ids` given are kept as given; logits
    wider than the vocabulary (padded head) pass, narrower ones would not."""
    den = HFDenoiser(_WideLM(), mask_id=7, eos_ids=[5, 2], fingerprint="toy@x")
    assert den.vocab_size == 8 and den.eos_ids == (5, 2)
    out = den(torch.tensor([[1, 7, 3]]))
    assert out.logits.shape == (1, 3, 12) and out.logits.dtype == torch.float32


def test_a_torch_attribute_that_is_not_a_dtype_is_refused_as_dtype():
    """`dtype="Tensor"` names a torch attribute, not a dtype: refused by depmask before anything
    loads (not left to transformers' own message after the config is read)."""
    with pytest.raises(ValueError, match=r"`dtype` \('Tensor'\) is not a torch dtype name"):
        HFDenoiser.from_pretrained(EMBEDDED, dtype="Tensor")
