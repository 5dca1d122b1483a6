"""Attention capture: equals the mean of eager `output_attentions` over the same layers and heads,
for HF-native and remote-code models, and costs O(b·l²) extra memory, not O(layers·heads·b·l²)."""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from depmask.models import AttentionCapture, HFDenoiser, default_capture_layers, find_layers
from depmask.models import attention_capture as ac
from depmask.models.attention_capture import explicit_attention
from tests.models.conftest import tiny_mdlm


def eager_mean(layers_attn, layers):
    return torch.stack([layers_attn[i] for i in layers]).float().mean(dim=(0, 2))  # [b, l, l]


def test_default_layers_are_the_last_quarter():
    assert default_capture_layers(32) == [24, 25, 26, 27, 28, 29, 30, 31]
    assert default_capture_layers(28) == list(range(21, 28))
    assert default_capture_layers(2) == [1]


@pytest.mark.parametrize("layers", [None, [0], [0, 2], [1, 2, 3]])
def test_remote_code_capture_equals_eager_mean(tiny_mdlm_dir, layers):
    from transformers import AutoModel

    den = HFDenoiser.from_pretrained(tiny_mdlm_dir, capture_layers=layers)
    eager = AutoModel.from_pretrained(tiny_mdlm_dir, trust_remote_code=True, local_files_only=True).eval()
    x = torch.randint(0, 37, (3, 12))
    am = torch.ones(3, 12, dtype=torch.long)
    am[1, :4] = 0  # a left-padded row
    got = den(x, am, need_attention=True).attention
    ref = eager(x, attention_mask=am, output_attentions=True).attentions
    want = eager_mean(ref, den.capture.layers)
    assert den.capture.layers == (layers or [3])
    assert (got - want).abs().max() < 1e-5


def test_hf_native_capture_equals_eager_mean(tiny_bert_dir):
    from transformers import AutoModelForMaskedLM

    den = HFDenoiser.from_pretrained(tiny_bert_dir, mask_id=4, capture_layers=[1, 3],
                                     attn_implementation="sdpa")
    eager = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    x = torch.randint(5, 50, (2, 10))
    am = torch.ones(2, 10, dtype=torch.long)
    am[0, 7:] = 0
    out = den(x, am, need_attention=True)
    ref = eager(input_ids=x, attention_mask=am, output_attentions=True).attentions
    assert (out.attention - eager_mean(ref, [1, 3])).abs().max() < 1e-5
    # the model goes back to its own attention implementation afterwards
    assert den.model.config._attn_implementation == "sdpa"
    assert torch.allclose(den(x, am).logits, out.logits, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_capture_does_not_change_the_logits(tiny_mdlm_dir, dtype):
    """The captured layers return the SDPA kernel's own output, bit for bit: in bf16 an output
    rebuilt from the float32 probabilities moved the logits (TV up to 6e-3 between a captured and
    an uncaptured forward of one canvas), so a harvest's captured baseline and its uncaptured
    probes disagreed, and `clad` decoded differently from the model it captures."""
    den = HFDenoiser.from_pretrained(tiny_mdlm_dir, dtype=dtype)
    x = torch.randint(0, 37, (2, 10), generator=torch.Generator().manual_seed(0))
    am = torch.ones(2, 10)
    am[0, :3] = 0
    for mask in (None, am):
        assert torch.equal(den(x, mask).logits, den(x, mask, need_attention=True).logits)


def test_uncaptured_layers_keep_the_fused_kernel(monkeypatch):
    """Only the captured layers compute attention explicitly; the others call SDPA itself."""
    calls = {"explicit": 0}
    import depmask.models.attention_capture as ac

    real = ac.explicit_attention

    def counting(*a, **k):
        calls["explicit"] += 1
        return real(*a, **k)

    monkeypatch.setattr(ac, "explicit_attention", counting)
    den = HFDenoiser(tiny_mdlm(num_hidden_layers=8), capture_layers=[6])
    den(torch.randint(0, 37, (1, 6)), need_attention=True)
    assert calls["explicit"] == 1


def test_explicit_attention_matches_sdpa_with_gqa_masks_and_causal():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=g)
    k, v = torch.randn(2, 2, 7, 8, generator=g), torch.randn(2, 2, 7, 8, generator=g)
    bool_mask = torch.rand(2, 1, 5, 7, generator=g) > 0.3
    bool_mask[..., 0] = True
    add_mask = torch.randn(2, 4, 5, 7, generator=g)
    for mask in (None, bool_mask, add_mask):
        for causal in ((False, True) if mask is None else (False,)):
            out, probs = explicit_attention(q, k, v, mask, causal)
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
            assert torch.allclose(out, ref, atol=1e-5)
            assert torch.allclose(probs.sum(-1), torch.full((2, 5), 4.0), atol=1e-4)


@pytest.mark.parametrize("heads_per_chunk", [1, 2, 3, 4])
def test_chunks_of_heads_compute_what_one_head_at_a_time_does(heads_per_chunk):
    """Every chunk size (3: a last chunk of one) gives SDPA's output and the same probabilities,
    under grouped-query heads, masks shaped as SDPA broadcasts them — [b, 1, q, k], [b, h, q, k],
    [h, q, k] (its first dimension runs over heads), [q, k] — and causal masking with a bool mask."""
    g = torch.Generator().manual_seed(1)
    b, h, q, k = 2, 4, 5, 7
    query = torch.randn(b, h, q, 8, generator=g)
    key, value = torch.randn(b, 2, k, 8, generator=g), torch.randn(b, 2, k, 8, generator=g)
    one_head = b * q * k * 4
    masks = [None, torch.rand(b, 1, q, k, generator=g) > 0.3, torch.randn(b, h, q, k, generator=g),
             torch.randn(h, q, k, generator=g), torch.rand(q, k, generator=g) > 0.3]
    for mask in masks:
        if mask is not None and mask.dtype == torch.bool:
            mask[..., 0] = True
        for causal in (False, True) if mask is None or mask.dtype == torch.bool else (False,):
            out, probs = explicit_attention(query, key, value, mask, causal, chunk_bytes=heads_per_chunk * one_head)
            _, single = explicit_attention(query, key, value, mask, causal, chunk_bytes=1)
            both = mask if not causal else torch.ones(q, k, dtype=torch.bool).tril() & (True if mask is None else mask)
            ref = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=both, enable_gqa=True)
            assert torch.allclose(out, ref, atol=1e-5), (None if mask is None else mask.shape, causal)
            assert torch.allclose(probs, single, atol=1e-6)


def test_the_chunk_budget_sets_how_many_heads_go_together():
    """Matrix products counted: 4 heads in budgets of 1 byte, 2 heads, 4 heads and the CPU's default."""
    query, key, value = torch.randn(1, 4, 3, 8), torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8)
    one_head = 1 * 3 * 6 * 4

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n = getattr(self, "n", 0) + (func.overloadpacket in (torch.ops.aten.bmm, torch.ops.aten.mm))
            return func(*args, **(kwargs or {}))

    def products(budget):
        with Count() as count:
            explicit_attention(query, key, value, need_output=False, chunk_bytes=budget)
        return count.n

    assert [products(b) for b in (1, 2 * one_head, 3 * one_head, 4 * one_head, None)] == [4, 2, 2, 1, 1]


def test_bad_capture_layers_are_named():
    with pytest.raises(ValueError, match=r"`capture_layers` \(\[9\]\)"):
        AttentionCapture(tiny_mdlm(), [9])
    assert len(find_layers(tiny_mdlm())) == 4


def test_a_model_that_bypasses_sdpa_is_refused():
    class Manual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    cap = AttentionCapture(Manual())
    with cap.capturing():
        Manual.forward(cap.model, torch.randn(1, 4))
    with pytest.raises(RuntimeError, match=r"saw 0 attention calls .* of the layer stack found, `layers` \(2 × Linear\)"):
        cap.result()


def test_the_layer_stack_of_a_mixture_of_experts_model_is_its_layers_not_an_expert_list():
    # each block holds 8 identical experts: the longest list of identical modules is an expert list
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.Linear(4, 4)
            self.experts = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(8))

    class MoE(torch.nn.Module):
        def __init__(self, config=None):
            super().__init__()
            self.config = config
            self.layers = torch.nn.ModuleList(Block() for _ in range(4))

    from types import SimpleNamespace

    for config in (SimpleNamespace(num_hidden_layers=4), SimpleNamespace(n_layers=4)):  # LLaDA names it n_layers
        model = MoE(config)
        assert find_layers(model) is model.layers
        with pytest.raises(ValueError, match=r"into the 4 layers of the layer stack found, `layers` \(4 × Block\)"):
            AttentionCapture(model, [5])
    no_config = MoE()  # nothing to tell the depth by: the longest list, named in the errors
    assert find_layers(no_config) is no_config.layers[0].experts
    assert "`layers.0.experts` (8 × Linear)" in AttentionCapture(no_config).stack_name


class _PeakLiveBytes(TorchDispatchMode):
    """Peak bytes of tensors created by ops inside the mode and still alive (CPU-friendly)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if n == 0 or key in self.seen:
                    continue
                self.seen.add(key)
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, key, n)
        return out

    def _free(self, key, n):
        self.live -= n
        self.seen.discard(key)


def peak_bytes(fn) -> int:
    mode = _PeakLiveBytes()
    with mode:
        fn()
    return mode.peak


@pytest.mark.parametrize("chunk", [1, 8])
def test_capture_memory_is_o_b_l2_not_layers_heads(chunk, monkeypatch):
    """Extra memory: the [b, l, l] sum and one chunk of heads' scores, whatever the layer count —
    head by head (a 1-byte budget) within 4 maps, all 8 heads at once (the CPU's default budget
    holds them) within 2 + 2.5 per head, against eager's layers × heads."""
    layers, heads, b, l = 8, 8, 2, 96
    bl2 = b * l * l * 4  # one float32 [b, l, l] map
    if chunk == 1:
        monkeypatch.setattr(ac, "CHUNK_BYTES", {"cpu": 1, "other": 1})
    assert min(heads, max(1, ac.CHUNK_BYTES["cpu"] // bl2)) == chunk
    den = HFDenoiser(tiny_mdlm(num_hidden_layers=layers, num_attention_heads=heads, hidden_size=32,
                               max_position_embeddings=128), capture_layers=list(range(layers)))
    x = torch.randint(0, 37, (b, l))
    plain = peak_bytes(lambda: den(x))
    captured = peak_bytes(lambda: den(x, need_attention=True))
    eager = peak_bytes(lambda: den.model(x, output_attentions=True))
    print(f"peak bytes: plain {plain}, capture all {layers} layers {captured} ({(captured - plain) / bl2:.2f} maps), "
          f"eager {eager}; b·l²·4 = {bl2}")
    assert captured - plain <= (4 if chunk == 1 else 2 + 2.5 * chunk) * bl2
    assert eager - plain >= layers * heads * bl2  # the measure sees what capture avoids


def test_a_query_row_with_no_key_to_attend_is_zero_as_in_sdpa():
    """A pairwise mask (Dream's) leaves padding query rows with no key: the explicit softmax gave
    NaN there (and Dream's unshift copied that row onto the first real token), SDPA gives 0."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=g) for _ in range(3))
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[:, :, 0, :] = False  # query row 0 attends nothing
    mask[:, :, :, 0] = False
    out, probs = explicit_attention(q, k, v, attn_mask=mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(probs).all() and (probs[:, 0] == 0).all()
    assert torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("layers", [[1.5], [2.0], [True], 3, "3"])
def test_capture_layers_of_the_wrong_kind_are_named(layers):
    with pytest.raises(ValueError, match=r"`capture_layers` .* must be a list of layer indices"):
        AttentionCapture(tiny_mdlm(), layers)
