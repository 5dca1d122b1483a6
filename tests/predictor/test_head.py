"""Behaviour of `DependencyHead`: shapes, masking, padding and translation invariance, dtypes,
trainability, and the lightweight budget on LLaDA-8B shapes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from depmask.predictor import DependencyHead, pair_mask
from tests.predictor.inputs import D, _state


def _head(**kw) -> DependencyHead:
    torch.manual_seed(0)
    head = DependencyHead(D, **{"dim": 32, "layers": 2, "heads": 4, "max_distance": 8, **kw}).eval()
    if head.refine is not None:  # its last layer starts at zero (a no-op): make it act
        torch.nn.init.normal_(head.refine.mlp[-1].weight, std=0.5)
    return head


LEAN = {"layers": 0, "pair_mlp": False}  # the lean variant: no encoder, bilinear + distance bias
SMALL = {"layers": 0, "pair_product": False, "pair_activation": "relu"}  # pair MLP without u_i ⊙ u_j
CONTEXT = {**SMALL, "set_context": True}  # the small variant plus the pooled set summary
REFINE = {**SMALL, "pair_refine": True}  # the small variant plus the two-hop refinement
VARIANTS = pytest.mark.parametrize("variant", [{}, LEAN, SMALL, CONTEXT, REFINE],
                                   ids=["default", "lean", "small", "context", "refine"])


def test_pair_mask():
    valid = torch.tensor([[True, False, True]])
    expected = torch.tensor([[[False, False, True], [False, False, False], [True, False, False]]])
    assert torch.equal(pair_mask(valid), expected)


@VARIANTS
def test_forward_shape_dtype_and_predict_range(variant):
    head = _head(**variant)
    hidden, positions, valid, conf, ent = _state()
    valid[1, -2:] = False
    logits = head(hidden, positions, valid, conf, ent)
    assert logits.shape == (2, 6, 6) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    probs = head.predict(hidden, positions, valid, conf, ent)
    assert probs.dtype == torch.float32 and probs.shape == (2, 6, 6)
    assert ((probs >= 0) & (probs <= 1)).all()
    assert (probs.diagonal(dim1=1, dim2=2) == 0).all()
    assert (probs[~pair_mask(valid)] == 0).all()
    assert (probs[pair_mask(valid)] > 0).all()
    assert not torch.allclose(probs, probs.transpose(1, 2))  # asymmetric by design


def test_empty_and_fully_padded_rows():
    head = _head()
    hidden, positions, valid, conf, ent = _state(m=0)
    assert head(hidden, positions, valid, conf, ent).shape == (2, 0, 0)
    assert head.predict(hidden, positions, valid, conf, ent).shape == (2, 0, 0)
    hidden, positions, valid, conf, ent = _state()
    valid[0] = False  # a row with nothing masked
    logits = head(hidden, positions, valid, conf, ent)
    assert torch.isfinite(logits).all()
    assert (head.predict(hidden, positions, valid, conf, ent)[0] == 0).all()
    # gradients stay finite with a fully padded row
    head.train()
    head(hidden, positions, valid, conf, ent)[pair_mask(valid)].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@VARIANTS
@pytest.mark.parametrize("where", ["end", "interleaved"])
def test_padding_invariance(where: str, variant):
    head = _head(**variant)
    hidden, positions, valid, conf, ent = _state(b=1, m=5)
    ref = head.predict(hidden, positions, valid, conf, ent)  # [1, 5, 5]
    pad = 4
    big_h = torch.full((1, 5 + pad, D), float("nan"))  # garbage in padded slots must not leak
    big_p = torch.full((1, 5 + pad), -7, dtype=torch.long)
    big_c, big_e = torch.full((1, 5 + pad), float("nan")), torch.full((1, 5 + pad), float("nan"))
    idx = torch.arange(5) if where == "end" else torch.tensor([1, 2, 4, 6, 8])
    big_h[:, idx], big_p[:, idx], big_c[:, idx], big_e[:, idx] = hidden, positions, conf, ent
    big_v = torch.zeros(1, 5 + pad, dtype=torch.bool)
    big_v[:, idx] = True
    out = head.predict(big_h, big_p, big_v, big_c, big_e)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, idx][:, :, idx], ref, atol=1e-5, rtol=0)
    assert (out[:, ~big_v[0]] == 0).all() and (out[:, :, ~big_v[0]] == 0).all()


@VARIANTS
def test_translation_invariance_and_position_sensitivity(variant):
    head = _head(**variant)
    with torch.no_grad():  # random weights: the lean variant's distance bias starts constant
        for p in head.parameters():
            p.normal_(std=0.3)
    hidden, positions, valid, conf, ent = _state()
    ref = head(hidden, positions, valid, conf, ent)
    assert torch.equal(head(hidden, positions + 137, valid, conf, ent), ref)
    spread = positions.clone()
    spread[:, -1] += 5  # one slot further away changes relative distances
    assert not torch.allclose(head(hidden, spread, valid, conf, ent), ref)


def test_set_context_lets_a_pair_see_the_rest_of_the_set():
    """Without an encoder layer a pair's score reads only its two slots; `set_context` adds the
    set's mean and size, so changing (or dropping) a third slot moves it."""
    hidden, positions, valid, conf, ent = _state(b=1, m=4)
    other = hidden.clone()
    other[0, 3] = torch.randn(D, generator=torch.Generator().manual_seed(1))
    fewer = valid.clone()
    fewer[0, 3] = False
    for variant, moves in ((SMALL, False), (CONTEXT, True)):
        head = _head(**variant)
        ref = head.predict(hidden, positions, valid, conf, ent)[0, :3, :3]
        for h, v in ((other, valid), (hidden, fewer)):
            out = head.predict(h, positions, v, conf, ent)[0, :3, :3]
            assert torch.allclose(out, ref, atol=1e-6) is not moves, variant
    with pytest.raises(ValueError, match=r"`set_context` \('yes'\) must be a bool"):
        _head(set_context="yes")


def test_pair_refine_reads_two_hop_sums_and_starts_as_a_no_op():
    """The refinement adds an MLP of the first pass's two-hop sums and row / column totals: a
    third slot moves a pair's score (as `set_context` does) and the features are the hand-computed
    ones. Freshly built, its last layer is zero: the head scores exactly as without it."""
    hidden, positions, valid, conf, ent = _state(b=1, m=4)
    other = hidden.clone()
    other[0, 3] = torch.randn(D, generator=torch.Generator().manual_seed(1))
    head = _head(**REFINE)
    ref = head.predict(hidden, positions, valid, conf, ent)[0, :3, :3]
    assert not torch.allclose(head.predict(other, positions, valid, conf, ent)[0, :3, :3], ref, atol=1e-6)
    # the features, by hand, on a 3-slot first pass with one padded slot
    logits = torch.randn(1, 4, 4)
    v = torch.tensor([[True, True, False, True]])
    seen = {}
    head.refine.mlp.register_forward_hook(lambda mod, args, out: seen.update(feats=args[0]))  # returns None
    head.refine(logits, v)
    p = torch.sigmoid(logits) * pair_mask(v)
    i, j = 0, 3
    expected = [logits[0, i, j], sum(p[0, i, k] * p[0, k, j] for k in range(4)),
                sum(p[0, i, k] * p[0, j, k] for k in range(4)), sum(p[0, k, i] * p[0, k, j] for k in range(4)),
                p[0, i].sum(), p[0, j].sum(), p[0, :, i].sum(), p[0, :, j].sum()]
    torch.testing.assert_close(seen["feats"][0, i, j], torch.stack(expected), atol=1e-6, rtol=1e-5)
    torch.manual_seed(0)
    fresh = DependencyHead(D, dim=32, layers=0, heads=4, max_distance=8, pair_product=False,
                           pair_activation="relu", pair_refine=True).eval()
    plain = DependencyHead(D, dim=32, layers=0, heads=4, max_distance=8, pair_product=False,
                           pair_activation="relu").eval()
    plain.load_state_dict({k: t for k, t in fresh.state_dict().items() if not k.startswith("refine.")})
    torch.testing.assert_close(fresh(hidden, positions, valid, conf, ent), plain(hidden, positions, valid, conf, ent),
                               atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"`pair_refine` \(1\) must be a bool"):
        _head(pair_refine=1)


def test_float16_and_float64_inputs():
    head = _head()
    hidden, positions, valid, conf, ent = _state()
    ref = head(hidden.half().float(), positions, valid, conf, ent)
    out = head(hidden.half(), positions, valid, conf.double(), ent.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    half_head = _head().half()
    assert half_head(hidden, positions, valid, conf, ent).dtype == torch.float16


def test_confidence_inputs():
    head = _head()
    hidden, positions, valid, conf, ent = _state()
    with pytest.raises(ValueError, match="confidence"):
        head(hidden, positions, valid)
    assert not torch.allclose(head(hidden, positions, valid, conf, ent), head(hidden, positions, valid, 1 - conf, ent))
    assert not torch.allclose(head(hidden, positions, valid, conf, ent), head(hidden, positions, valid, conf, ent + 1))
    plain = _head(use_confidence=False)
    assert torch.equal(plain(hidden, positions, valid), plain(hidden, positions, valid, conf, ent))


def test_bad_inputs_and_args_are_named():
    head = _head()
    hidden, positions, valid, conf, ent = _state()
    with pytest.raises(ValueError, match=r"`hidden` must be \[b, m, 32\]"):
        head(hidden[..., :8], positions, valid, conf, ent)
    with pytest.raises(ValueError, match="`positions`"):
        head(hidden, positions[:, :3], valid, conf, ent)
    with pytest.raises(ValueError, match=r"`heads` \(3\) must divide `dim` \(32\)"):
        DependencyHead(D, dim=32, heads=3)
    with pytest.raises(ValueError, match="`dropout`"):
        DependencyHead(D, dropout=1.5)
    with pytest.raises(ValueError, match=r"`pair_mlp` \('no'\) must be a bool"):
        DependencyHead(D, pair_mlp="no")
    with pytest.raises(ValueError, match=r"`pair_product` \(1\) must be a bool"):
        DependencyHead(D, pair_product=1)
    with pytest.raises(ValueError, match=r"`pair_activation` \('tanh'\) must be one of \['gelu', 'relu'\]"):
        DependencyHead(D, pair_activation="tanh")
    # `use_confidence` went through bool(): "false" built (and saved) a head that reads confidence
    with pytest.raises(ValueError, match=r"`use_confidence` \('false'\) must be a bool"):
        DependencyHead(D, use_confidence="false")
    with pytest.raises(ValueError, match=r"`dropout` \('0.1'\) must be a number in \[0, 1\)"):
        DependencyHead(D, dropout="0.1")
    with pytest.raises(ValueError, match=r"`pair_activation` \(\['relu'\]\) must be one of"):
        DependencyHead(D, pair_activation=["relu"])


def test_the_lean_variant_is_a_fraction_of_the_default():
    """`pair_mlp=False, layers=0` builds no [b, m, m, ·] tensor: far fewer FLOPs and parameters."""
    hidden, positions, valid, conf, ent = _state(b=4, m=16)

    def cost(head):
        with FlopCounterMode(display=False) as counter:
            head(hidden, positions, valid, conf, ent)
        return counter.get_total_flops(), sum(p.numel() for p in head.parameters())

    (flops, params), (lean_flops, lean_params) = cost(_head()), cost(_head(**LEAN))
    assert lean_flops < flops / 4 and lean_params < params / 4, (flops, lean_flops, params, lean_params)


def test_dropping_the_pair_product_removes_its_flops_and_weights():
    """`pair_product=False` has no `prod` weight and skips the `[b, m, m, pair_dim] · dim` einsum;
    the activation is what the config says."""
    hidden, positions, valid, conf, ent = _state(b=4, m=16)

    def flops(head):
        with FlopCounterMode(display=False) as counter:
            head(hidden, positions, valid, conf, ent)
        return counter.get_total_flops()

    full, small = _head(layers=0), _head(**SMALL)
    assert not hasattr(small.scorer, "prod") and hasattr(full.scorer, "prod")
    assert isinstance(small.scorer.mlp[0], torch.nn.ReLU) and isinstance(full.scorer.mlp[0], torch.nn.GELU)
    b, m, pair_dim, dim = 4, 16, 16, 32
    assert flops(full) - flops(small) == 2 * b * m * m * pair_dim * dim  # exactly the product term


@pytest.mark.parametrize("variant", [{}, SMALL], ids=["default", "small"])
def test_the_pair_mlp_last_layer_as_a_multiply_sum_is_the_linear_layer(variant):
    """The pair scorer applies its last `Linear(pair_dim, 1)` as a fused multiply-sum (no GEMM
    call per step); it must be that layer — checkpoints trained with `mlp(first)` score the same."""
    head = _head(**variant)
    hidden, positions, valid, conf, ent = _state(b=3, m=9)
    scorer, seen = head.scorer, {}
    scorer.register_forward_hook(lambda mod, args, out: seen.update(u=args[0], rel=args[1], out=out))
    head(hidden, positions, valid, conf, ent)
    u, rel = seen["u"], seen["rel"]
    first = scorer.row(u)[:, :, None, :] + scorer.col(u)[:, None, :, :] + scorer.rel(rel)
    if scorer.product:
        first = first + torch.einsum("bip,bjp,qp->bijq", u, u, scorer.prod)
    bilinear = scorer.query(u) @ scorer.key(u).transpose(-1, -2) / scorer.dim ** 0.5
    torch.testing.assert_close(seen["out"], bilinear + scorer.mlp(first).squeeze(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", [{}, LEAN, SMALL, {**SMALL, "use_confidence": False}],
                         ids=["default", "lean", "small", "small-no-confidence"])
def test_the_compiled_forms_compute_what_eager_does(variant, monkeypatch):
    """Under compilation the slot encoder and the pair scorer take forms with fewer BLAS calls
    (stacked weights, multiply-sums); run here eagerly with `is_compiling` forced on, they must
    give eager's logits, and a padded slot must not leak into valid ones."""
    head = _head(**variant)
    hidden, positions, valid, conf, ent = _state(b=3, m=9)
    valid[1, -3:] = False
    eager = head(hidden, positions, valid, conf, ent)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    compiled_form = head(hidden, positions, valid, conf, ent)
    torch.testing.assert_close(compiled_form, eager, rtol=1e-5, atol=1e-5)
    hidden[1, -3:] = float("nan")  # padding: never read
    pairs = pair_mask(valid)
    assert torch.isfinite(head(hidden, positions, valid, conf, ent)[pairs]).all()


@pytest.mark.parametrize("variant", [{"layers": 1}, LEAN, SMALL], ids=["default", "lean", "small"])
def test_training_reduces_bce_on_neighbour_target(variant):
    torch.manual_seed(0)
    head = DependencyHead(D, **{"dim": 32, "heads": 4, "max_distance": 8, **variant})
    b, m = 8, 7
    hidden, positions, valid, conf, ent = _state(b=b, m=m, seed=1)
    positions = torch.stack([torch.randperm(20)[:m].sort().values for _ in range(b)])  # varied gaps
    valid[::3, -2:] = False
    target = ((positions[:, :, None] - positions[:, None, :]).abs() == 1).float()  # [b, m, m]
    pairs = pair_mask(valid)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        logits = head(hidden, positions, valid, conf, ent)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[pairs], target[pairs])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::10]
    probs = head.eval().predict(hidden, positions, valid, conf, ent)
    assert ((probs[pairs] > 0.5) == (target[pairs] > 0.5)).float().mean() > 0.95


def test_budget_llada_8b():
    """≤ 1 % of LLaDA-8B's parameters and ≤ 1 % of one base forward (l = 512) in FLOPs."""
    base_params, d, m, l = 8.0e9, 4096, 32, 512
    head = DependencyHead(d)
    params = sum(p.numel() for p in head.parameters())
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, m, d, generator=g).half()  # [1, m, d] as harvested
    positions = torch.arange(m)[None] + 100
    valid = torch.ones(1, m, dtype=torch.bool)
    conf, ent = torch.rand(1, m, generator=g), torch.rand(1, m, generator=g)
    with FlopCounterMode(display=False) as counter:
        head(hidden, positions, valid, conf, ent)
    flops = counter.get_total_flops()
    base_flops = 2 * base_params * l
    print(f"\nDependencyHead(4096): {params:,} params = {params / base_params:.3e} of LLaDA-8B; "
          f"forward [1, {m}, {d}] = {flops:.3e} FLOPs = {flops / base_flops:.3e} of one base forward (l={l})")
    assert params == 1_025_929  # the figure in the class docstring
    assert params / base_params <= 0.01
    assert 0 < flops / base_flops <= 0.01
