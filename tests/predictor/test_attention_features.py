"""The head's optional attention input (`use_attention`): the pair features it reads from the base
model's captured attention, and what the head does with them."""

from __future__ import annotations

import math

import pytest
import torch

from depmask.predictor import DependencyHead, pair_mask
from depmask.predictor.features import ATTENTION_FEATURES, attention_pair_features
from tests.predictor.inputs import D, _state

SMALL = {"dim": 32, "layers": 0, "heads": 4, "max_distance": 8, "pair_product": False, "pair_activation": "relu"}


def _attention(b: int = 2, m: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(b, m, m + 10, generator=g).softmax(dim=-1)  # rows over a wider canvas
    return a[:, :, :m].contiguous()  # [b, m, m]: each row sums to < 1, as gathered at the slots


def _head(**kw) -> DependencyHead:
    torch.manual_seed(0)
    head = DependencyHead(D, **{**SMALL, "use_attention": True, **kw}).eval()
    with torch.no_grad():  # random weights, so every input reaches the logits
        for p in head.parameters():
            p.normal_(std=0.3)
    return head


def test_features_by_hand():
    a = torch.tensor([[[0.0, 0.3, 0.1], [0.2, 0.0, 0.2], [0.05, 0.05, 0.0]]])  # [1, 3, 3]
    valid = torch.ones(1, 3, dtype=torch.bool)
    f = attention_pair_features(a, valid)[0]  # [3, 3, F]
    assert f.shape == (3, 3, ATTENTION_FEATURES)
    assert f[0, 1, 0].item() == pytest.approx(0.75)  # 0.3 of row 0's 0.4 on the slots
    assert f[0, 1, 1].item() == pytest.approx(0.5)  # the other direction: 0.2 of row 1's 0.4
    assert f[0, 1, 2].item() == pytest.approx(math.log(0.75) / -math.log(1e-3))
    assert f[0, 1, 3].item() == pytest.approx(math.log(0.5) / -math.log(1e-3))
    assert f[0, 1, 4].item() == pytest.approx(0.4) and f[0, 1, 5].item() == pytest.approx(0.4)
    assert f[2, 0, 4].item() == pytest.approx(0.1) and f[2, 0, 5].item() == pytest.approx(0.4)
    assert f[0, 0, 2].item() == -1.0  # no self-attention on the diagonal: the log share's floor
    log_shares = f[..., 2:4]
    assert (log_shares >= -1).all() and (log_shares <= 0).all()


def test_padded_slots_contribute_nothing_and_cannot_leak():
    a = _attention(b=1, m=5)
    valid = torch.ones(1, 5, dtype=torch.bool)
    ref = attention_pair_features(a, valid)
    big = torch.full((1, 8, 8), float("nan"))  # garbage (NaN) wherever a padded slot is involved
    idx = torch.tensor([0, 2, 3, 5, 7])
    big[0, idx[:, None], idx[None, :]] = a[0]
    big_valid = torch.zeros(1, 8, dtype=torch.bool)
    big_valid[0, idx] = True
    out = attention_pair_features(big, big_valid)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, idx][:, :, idx], ref)
    pairs = big_valid[:, :, None] & big_valid[:, None, :]
    assert (out[~pairs] == 0).all()


def test_bad_attention_shape_is_named():
    with pytest.raises(ValueError, match=r"`attention` must be \[b, m, m\]"):
        attention_pair_features(torch.zeros(2, 6, 5), torch.ones(2, 6, dtype=torch.bool))


def test_the_head_reads_attention_and_requires_it():
    head = _head()
    hidden, positions, valid, conf, ent = _state()
    a = _attention()
    out = head(hidden, positions, valid, conf, ent, a)
    assert out.shape == (2, 6, 6) and torch.isfinite(out).all()
    moved = head(hidden, positions, valid, conf, ent, a.roll(1, dims=2))
    assert not torch.allclose(moved[pair_mask(valid)], out[pair_mask(valid)])  # the attention matters
    with pytest.raises(ValueError, match="`attention` is required"):
        head(hidden, positions, valid, conf, ent)
    with pytest.raises(ValueError, match=r"`attention` must be \[b, m, m\] = \[2, 6, 6\]"):
        head(hidden, positions, valid, conf, ent, a[:, :5, :5])
    with pytest.raises(ValueError, match="`use_attention`"):
        DependencyHead(D, use_attention="yes")


def test_a_head_without_the_flag_ignores_attention():
    head = _head(use_attention=False)
    hidden, positions, valid, conf, ent = _state()
    ref = head(hidden, positions, valid, conf, ent)
    assert torch.equal(head(hidden, positions, valid, conf, ent, _attention()), ref)


@pytest.mark.parametrize("pair_mlp", [True, False], ids=["pair-mlp", "bilinear"])
def test_padding_invariance_with_attention(pair_mlp):
    head = _head(pair_mlp=pair_mlp)
    hidden, positions, valid, conf, ent = _state(b=1, m=5)
    a = _attention(b=1, m=5)
    ref = head.predict(hidden, positions, valid, conf, ent, a)
    idx = torch.tensor([1, 2, 4, 6, 8])
    big_h = torch.full((1, 9, D), float("nan"))
    big_p = torch.full((1, 9), -7, dtype=torch.long)
    big_c, big_e = torch.full((1, 9), float("nan")), torch.full((1, 9), float("nan"))
    big_a = torch.full((1, 9, 9), float("nan"))
    big_h[:, idx], big_p[:, idx], big_c[:, idx], big_e[:, idx] = hidden, positions, conf, ent
    big_a[0, idx[:, None], idx[None, :]] = a[0]
    big_v = torch.zeros(1, 9, dtype=torch.bool)
    big_v[:, idx] = True
    out = head.predict(big_h, big_p, big_v, big_c, big_e, big_a)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, idx][:, :, idx], ref, atol=1e-5, rtol=0)


def test_the_flag_survives_a_checkpoint_and_old_checkpoints_read_without_it(tmp_path):
    head = _head()
    hidden, positions, valid, conf, ent = _state()
    a = _attention()
    loaded = DependencyHead.from_pretrained(head.save_pretrained(tmp_path / "attn"))
    assert loaded.use_attention and loaded.config["use_attention"] is True
    torch.testing.assert_close(loaded.predict(hidden, positions, valid, conf, ent, a),
                               head.predict(hidden, positions, valid, conf, ent, a))
    plain = DependencyHead(D, **SMALL)
    path = plain.save_pretrained(tmp_path / "plain")
    config = (path / "config.json").read_text().replace('"use_attention": false,', "")
    assert '"use_attention"' not in config  # a checkpoint written before the flag existed
    (path / "config.json").write_text(config)
    assert DependencyHead.from_pretrained(path).use_attention is False


def test_training_learns_a_target_that_only_the_attention_carries():
    """The target is the attention share itself (hidden states are noise): a head with the flag
    fits it, one without cannot."""
    losses = {}
    for flag in (True, False):
        torch.manual_seed(0)
        head = DependencyHead(D, **SMALL, use_attention=flag)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for step in range(150):
            hidden, positions, valid, conf, ent = _state(b=8, m=6, seed=step)
            a = _attention(b=8, m=6, seed=1000 + step)
            target = (a / a.sum(-1, keepdim=True) > 0.2).float()
            pairs = pair_mask(valid)
            logits = head(hidden, positions, valid, conf, ent, a)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[pairs], target[pairs])
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[flag] = loss.item()
    assert losses[True] < 0.5 * losses[False], losses
