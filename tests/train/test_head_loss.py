"""The head's training losses: the prefix-cost term of `bce_prefix` against a hand computation."""

import pytest
import torch

from depmask.train.head_module import HeadModule


def batch_of(tv, confidence, valid):
    b, m = valid.shape
    return {"tv": tv, "confidence": confidence, "valid": valid, "hidden": torch.zeros(b, m, 8),
            "positions": torch.arange(m).expand(b, m), "entropy": torch.zeros(b, m)}


def module(**kw):
    return HeadModule(hidden_size=8, dim=16, layers=0, heads=2, loss="bce_prefix", export_dir=None, **kw)


def test_the_prefix_term_is_zero_for_a_perfect_prediction_and_follows_confidence_order():
    torch.manual_seed(0)
    tv = torch.rand(2, 4, 4) * 0.3
    confidence = torch.tensor([[0.2, 0.9, 0.5, 0.7], [0.9, 0.8, 0.1, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    batch = batch_of(tv, confidence, valid)
    mod = module()
    assert mod._prefix_term(torch.logit(tv.clamp(1e-6, 1 - 1e-6)), batch).item() == pytest.approx(0.0, abs=1e-6)
    # halve one pair's predicted influence: only prefixes that contain both of its positions move
    pred = tv.clone()
    pred[0, 1, 2] /= 2  # row 0 visits 1 (0.9), 3 (0.7), 2 (0.5), 0 (0.2): pair (1, 2) enters at the 3rd prefix
    order = [1, 3, 2, 0]
    true_cost = [sum(tv[0, i, j] for i in order[:t + 1] for j in order[:t + 1] if i != j) for t in range(4)]
    pred_cost = [c - (tv[0, 1, 2] / 2 if t >= 2 else 0) for t, c in enumerate(true_cost)]
    expected = sum((torch.log1p(torch.as_tensor(p)) - torch.log1p(torch.as_tensor(c))) ** 2
                   for p, c in zip(pred_cost, true_cost)) / 7  # 4 + 3 live prefixes
    got = mod._prefix_term(torch.logit(pred.clamp(1e-6, 1 - 1e-6)), batch)
    assert got.item() == pytest.approx(float(expected), rel=1e-4)


def test_bce_prefix_is_bce_plus_the_weighted_term_and_bad_weights_are_named():
    torch.manual_seed(0)
    mod = module(prefix_weight=2.0)
    tv = torch.rand(1, 3, 3) * 0.2
    batch = batch_of(tv, torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3, dtype=torch.bool))
    logits, target, pairs, full = mod._pairs(batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert mod._loss(logits, target, full, batch).item() == pytest.approx(
        (bce + 2.0 * mod._prefix_term(full, batch)).item())
    with pytest.raises(ValueError, match="prefix_weight"):
        module(prefix_weight=-1.0)


def test_tv_weight_weighs_each_pairs_bce_by_its_influence():
    torch.manual_seed(0)
    plain = HeadModule(hidden_size=8, dim=16, layers=0, heads=2, export_dir=None)
    weighted = HeadModule(hidden_size=8, dim=16, layers=0, heads=2, export_dir=None, tv_weight=10.0)
    logits, target = torch.tensor([0.0, -3.0, 2.0]), torch.tensor([0.5, 0.0, 0.2])
    per_pair = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    assert plain._loss(logits, target, None, {}).item() == pytest.approx(per_pair.mean().item())
    assert weighted._loss(logits, target, None, {}).item() == pytest.approx(
        (per_pair * torch.tensor([6.0, 1.0, 3.0])).mean().item())
    with pytest.raises(ValueError, match=r"`tv_weight` \(-1.0\) must be a finite number >= 0"):
        HeadModule(hidden_size=8, export_dir=None, tv_weight=-1.0)


def test_state_balance_gives_each_state_the_weight_its_pair_count_to_the_minus_gamma_says():
    torch.manual_seed(0)
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])  # 12 pairs, 2 pairs
    batch = batch_of(torch.rand(2, 4, 4) * 0.3, torch.rand(2, 4), valid)
    plain, balanced, half = (HeadModule(hidden_size=8, dim=16, layers=0, heads=2, export_dir=None, state_balance=g)
                             for g in (0.0, 1.0, 0.5))
    balanced.load_state_dict(plain.state_dict())
    half.load_state_dict(plain.state_dict())
    logits, target, _, full = plain._pairs(batch)
    per_pair = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    first, second = per_pair[:12].mean(), per_pair[12:].mean()
    assert plain._loss(logits, target, full, batch).item() == pytest.approx(per_pair.mean().item())
    # γ = 1: each state's mean pair loss counts alike, whatever its pair count
    assert balanced._loss(logits, target, full, batch).item() == pytest.approx(((first + second) / 2).item(), rel=1e-5)
    # γ = 0.5: weights 12^-0.5 and 2^-0.5 per pair, rescaled to mean 1 over the 14 pairs
    w = torch.tensor([12 ** -0.5] * 12 + [2 ** -0.5] * 2)
    w = w * 14 / w.sum()
    assert half._loss(logits, target, full, batch).item() == pytest.approx((per_pair * w).mean().item(), rel=1e-5)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"`state_balance` \({bad}\) must lie in \[0, 1\]"):
            HeadModule(hidden_size=8, export_dir=None, state_balance=bad)


def test_state_balance_multiplies_the_tv_weight():
    torch.manual_seed(0)
    valid = torch.tensor([[True, True, True], [True, True, False]])  # 6 pairs, 2 pairs
    batch = batch_of(torch.rand(2, 3, 3) * 0.3, torch.rand(2, 3), valid)
    mod = HeadModule(hidden_size=8, dim=16, layers=0, heads=2, export_dir=None, state_balance=1.0, tv_weight=10.0)
    logits, target, _, full = mod._pairs(batch)
    per_pair = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    balance = torch.tensor([1 / 6] * 6 + [1 / 2] * 2)
    balance = balance * 8 / balance.sum()
    expected = (per_pair * (1 + 10.0 * target) * balance).mean()
    assert mod._loss(logits, target, full, batch).item() == pytest.approx(expected.item(), rel=1e-5)


def saved_teacher(tmp_path, fingerprint="base@x", hidden_size=8):
    from depmask.predictor import DependencyHead

    torch.manual_seed(1)
    teacher = DependencyHead(hidden_size, dim=16, layers=1, heads=2, base_fingerprint=fingerprint)
    return teacher, teacher.save_pretrained(tmp_path / "teacher")


def test_a_teacher_mixes_its_predictions_into_the_bce_label_but_not_into_the_weight(tmp_path):
    teacher, path = saved_teacher(tmp_path)
    torch.manual_seed(0)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    batch = batch_of(torch.rand(2, 3, 3) * 0.3, torch.rand(2, 3), valid)
    batch["hidden"] = torch.randn(2, 3, 8)
    mod = HeadModule(hidden_size=8, base_fingerprint="base@x", dim=16, layers=0, heads=2, export_dir=None,
                     tv_weight=10.0, teacher=str(path), teacher_weight=0.25)
    logits, target, pairs, full = mod._pairs(batch)
    soft = teacher.predict(batch["hidden"], batch["positions"], valid, batch["confidence"], batch["entropy"])[pairs]
    label = mod._distilled(target, batch)
    assert torch.allclose(label, 0.75 * target + 0.25 * soft, atol=1e-6)
    assert not torch.allclose(label, target)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, label, weight=1 + 10.0 * target)
    assert mod._loss(logits, target, full, batch, label=label).item() == pytest.approx(expected.item(), rel=1e-6)
    # frozen, outside the optimiser and the checkpoint; the student alone is exported
    assert not any(k.startswith("_teacher") for k in mod.state_dict())
    assert sum(p.numel() for p in mod.parameters()) == sum(p.numel() for p in mod.head.parameters())
    # without a teacher (or with weight 0) the label is the harvested TV
    plain = HeadModule(hidden_size=8, dim=16, layers=0, heads=2, export_dir=None)
    assert plain._distilled(target, batch) is target


def test_a_teacher_for_another_model_or_a_bad_weight_is_refused(tmp_path):
    _, path = saved_teacher(tmp_path, fingerprint="other@y")
    with pytest.raises(ValueError, match=r"`teacher` .* base model 'other@y' .* this harvest is 'base@x'"):
        HeadModule(hidden_size=8, base_fingerprint="base@x", export_dir=None, teacher=str(path))
    for bad in (-0.5, 1.5):
        with pytest.raises(ValueError, match=rf"`teacher_weight` \({bad}\) must lie in \[0, 1\]"):
            HeadModule(hidden_size=8, export_dir=None, teacher_weight=bad)
    with pytest.raises(ValueError, match="`teacher` .* needs a BCE loss"):
        HeadModule(hidden_size=8, base_fingerprint="other@y", export_dir=None, teacher=str(path), loss="mse")
    with pytest.raises(FileNotFoundError):
        HeadModule(hidden_size=8, export_dir=None, teacher=str(tmp_path / "missing"))


def test_a_batch_without_pairs_gives_a_zero_training_loss_and_no_validation_figures():
    """A batch of one-position states (the unshuffled val set's tail often is one) had a NaN loss:
    the epoch's val/loss went NaN, the best checkpoint stuck, and the export failed."""
    valid = torch.tensor([[True, False, False], [True, False, False]])
    batch = {**batch_of(torch.rand(2, 3, 3), torch.rand(2, 3), valid), "attention": torch.rand(2, 3, 3),
             "state": torch.tensor([0, 1])}
    mod = module()
    loss = mod.training_step(batch, 0)
    assert loss.item() == 0.0 and loss.requires_grad
    mod.validation_step(batch, 0)
    assert (mod._val_loss_sum, mod._val_pairs) == (0.0, 0)
    both = {**batch, "valid": torch.tensor([[True, True, False], [True, False, False]])}
    mod.validation_step(both, 0)
    assert mod._val_pairs == 2 and torch.isfinite(torch.tensor(mod._val_loss_sum))


def test_precision_shares_count_ties_as_eval_predictor_does():
    """Saturated sigmoids tie at the k-th place; the share counts them by expectation, as
    `eval predictor` does, so the exported manifest's precision@k is its figure."""
    import numpy as np

    from depmask.eval.predictor_quality import precision_at_k
    from depmask.predictor import pair_mask
    from depmask.train.head_module import precision_shares

    g = torch.Generator().manual_seed(0)
    valid = torch.tensor([[True] * 4, [True, True, False, False], [True, True, True, False]])
    pairs = pair_mask(valid)
    logits = torch.randn(3, 4, 4, generator=g)
    logits[0, 0, 1] = logits[0, 1, 0] = logits[0, 2, 3] = 40.0  # three pairs tie at sigmoid 1.0
    tv = torch.rand(3, 4, 4, generator=g) * 0.3
    shares = precision_shares(logits, tv, pairs, 2, 0.1)
    state = torch.arange(3)[:, None, None].expand_as(pairs)[pairs].numpy()
    want = precision_at_k(torch.sigmoid(logits)[pairs].numpy(), (tv[pairs] >= 0.1).numpy(), state, 2)
    assert shares.numel() == 3  # every state has ≥ 2 ordered pairs (the 2-slot one exactly 2)
    assert float(shares.mean()) == pytest.approx(want) and not np.isnan(want)
