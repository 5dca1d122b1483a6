"""Details of the training modules that no fit-level test could see: the head's and the MDLM's
learning-rate schedules and optimiser settings, the head's validation metrics (what each logged
name is, how the val set's figures pool over batches and reset between validations), the teacher
in the training step, the head's argument checks, the MDLM's noise keys, the seeded epoch order,
and what `train_head` sets up."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics.functional import spearman_corrcoef
from torchmetrics.functional.classification import binary_auroc

from depmask.predictor import pair_mask
from depmask.train.head_module import HeadModule, precision_shares
from depmask.train.mdlm_module import MDLMModule


def head(**kw) -> HeadModule:
    torch.manual_seed(0)
    return HeadModule(**{"hidden_size": 8, "dim": 16, "layers": 0, "heads": 2, "export_dir": None, **kw})


def state_batch(valid: torch.Tensor, seed: int = 0) -> dict:
    """A batch of harvested states over `valid` ([b, m]): random TV in [0, 0.3) and asymmetric attention."""
    g = torch.Generator().manual_seed(seed)
    b, m = valid.shape
    return {"tv": torch.rand(b, m, m, generator=g) * 0.3, "attention": torch.rand(b, m, m, generator=g),
            "confidence": torch.rand(b, m, generator=g), "entropy": torch.rand(b, m, generator=g),
            "hidden": torch.randn(b, m, 8, generator=g), "positions": torch.arange(m).expand(b, m), "valid": valid}


def lr_factors(module, total: int, steps: int) -> list[float]:
    """The schedule's lr factor at optimiser steps 0 .. steps-1 of a fit of `total` steps."""
    module.trainer = SimpleNamespace(estimated_stepping_batches=total)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    return [sched.lr_lambdas[0](s) for s in range(steps)]


def cosine(frac: float) -> float:
    return 0.1 + 0.45 * (1 + math.cos(math.pi * frac))


# --- the head's optimiser ---------------------------------------------------------------------------


def test_the_head_warms_up_linearly_then_decays_by_cosine_to_a_tenth():
    """Linear warm-up over `warmup_steps`, then the cosine from 1 down to 0.1 (not to 0) at the fit's end."""
    got = lr_factors(head(warmup_steps=2), total=10, steps=11)
    want = [0.5, 1.0] + [cosine((s - 2) / 8) for s in range(2, 11)]
    assert got == pytest.approx(want, abs=1e-6)
    assert got[-1] == pytest.approx(0.1)


def test_the_head_optimiser_is_adamw_with_the_given_weight_decay():
    opt = head(weight_decay=0.05, lr=3e-3)
    opt.trainer = SimpleNamespace(estimated_stepping_batches=4)
    optimiser = opt.configure_optimizers()["optimizer"]
    assert isinstance(optimiser, torch.optim.AdamW)
    assert {(g["weight_decay"], g["initial_lr"]) for g in optimiser.param_groups} == {(0.05, 3e-3)}


# --- the head's validation --------------------------------------------------------------------------


def validate(module: HeadModule, batches: list[dict]) -> dict[str, float]:
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, accelerator="cpu", devices=1)
    trainer.validate(module, dataloaders=DataLoader(batches, batch_size=None), verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def expected_val(module: HeadModule, batches: list[dict]) -> dict[str, float]:
    """The val set's figures by hand: the loss and precision@k pooled over pairs and states."""
    with torch.no_grad():
        parts = [module._pairs(b) for b in batches]
        losses = [(module._loss(lg, t, full, b).item(), t.numel()) for (lg, t, _, full), b in zip(parts, batches)]
        shares = torch.cat([precision_shares(full, b["tv"], p, module.hparams.precision_k, 0.1)
                            for (_, _, p, full), b in zip(parts, batches)])
    return {"val/loss": sum(v * n for v, n in losses) / sum(n for _, n in losses),
            "val/precision_at_k": float(shares.mean())}


def test_val_loss_and_precision_pool_over_the_val_set_and_restart_each_validation():
    """`val/loss` is the mean over every pair of the val set (each batch's loss weighted by its
    pairs, not summed nor averaged per batch); `val/precision_at_k` the mean over states; both
    start afresh at the next validation (otherwise the first one's sums leak into the second)."""
    module = head(precision_k=2)
    first = [state_batch(torch.tensor([[True] * 4, [True, True, True, False]]), 1),
             state_batch(torch.tensor([[True, True, False, False]]), 2)]  # 12 + 6 pairs, then 2
    second = [state_batch(torch.tensor([[True, True, True]]), 3)]
    got = validate(module, first)
    want = expected_val(module, first)
    assert got["val/loss"] == pytest.approx(want["val/loss"], rel=1e-5)
    assert got["val/precision_at_k"] == pytest.approx(want["val/precision_at_k"], rel=1e-5)
    again = validate(module, second)
    want = expected_val(module, second)
    assert again["val/loss"] == pytest.approx(want["val/loss"], rel=1e-5)
    assert again["val/precision_at_k"] == pytest.approx(want["val/precision_at_k"], rel=1e-5)


def test_each_val_metric_is_logged_under_its_own_name_and_definition():
    """`val/auroc` is the head's AUROC (what `train_head` checkpoints on), `val/spearman` ranks
    against the TV itself (not the positives), and the attention baseline is scored on max(A, Aᵀ)."""
    module = head()
    batches = [state_batch(torch.ones(2, 5, dtype=torch.bool), 4), state_batch(torch.ones(1, 4, dtype=torch.bool), 5)]
    got = validate(module, batches)
    with torch.no_grad():
        pred = torch.cat([torch.sigmoid(module._pairs(b)[0]) for b in batches])
    tv = torch.cat([b["tv"][pair_mask(b["valid"])] for b in batches])
    positive = (tv >= 0.1).long()
    att = {name: torch.cat([f(b["attention"], b["attention"].transpose(1, 2))[pair_mask(b["valid"])]
                            for b in batches]) for name, f in (("max", torch.maximum), ("min", torch.minimum),
                                                              ("raw", lambda a, _: a))}
    assert 0 < int(positive.sum()) < len(positive)
    assert got["val/auroc"] == pytest.approx(float(binary_auroc(pred, positive)), abs=1e-6)
    assert got["val/auroc"] != pytest.approx(got["val/ap"], abs=1e-4)  # the check can see them swapped
    assert got["val/spearman"] == pytest.approx(float(spearman_corrcoef(pred, tv)), abs=1e-5)
    assert float(spearman_corrcoef(pred, positive.float())) != pytest.approx(got["val/spearman"], abs=1e-3)
    want = float(binary_auroc(att["max"], positive))
    assert got["val/auroc_attention"] == pytest.approx(want, abs=1e-6)
    assert all(float(binary_auroc(att[k], positive)) != pytest.approx(want, abs=1e-4) for k in ("min", "raw"))


@pytest.mark.parametrize("threshold, shift, side", [(0.5, 0.0, "below"), (0.1, 0.1, "at or above")])
def test_auroc_and_ap_are_nan_with_a_warning_when_the_val_set_holds_one_class(threshold, shift, side):
    """torchmetrics gives AUROC 0.0 without positives (a perfectly inverted ranking, to a monitor);
    with one class only the four ranking metrics are undefined, and the rest still stand."""
    module = head(positive_threshold=threshold)
    batch = state_batch(torch.ones(2, 4, dtype=torch.bool), 6)
    batch["tv"] += shift  # TVs in [shift, shift + 0.3)
    with pytest.warns(UserWarning, match=f"every val pair is {side} `positive_threshold`"):
        got = validate(module, [batch])
    assert all(math.isnan(got[f"val/{k}"]) for k in ("auroc", "ap", "auroc_attention", "ap_attention"))
    assert all(math.isfinite(got[k]) for k in ("val/loss", "val/spearman"))
    assert math.isnan(module._val_history[0]["val/auroc"])  # what an export would record


def test_the_val_history_survives_a_checkpoint_round_trip_with_integer_steps():
    """A resumed fit exports the metrics of the checkpoint it exports: the history comes back from
    the checkpoint (keys as ints, whatever the serialisation made of them)."""
    saved = {}
    module = head()
    module._val_history = {3: {"val/loss": 0.5}}
    module.on_save_checkpoint(saved)
    restored = head()
    restored.on_load_checkpoint({"val_history": {"3": {"val/loss": 0.5}}})
    assert restored._val_history == {3: {"val/loss": 0.5}} == saved["val_history"]


def test_every_logged_metric_is_a_monitor_the_head_accepts():
    assert head().logged_metrics() >= {"train/loss", "val/loss", "val/auroc", "val/ap", "val/spearman",
                                       "val/precision_at_k", "val/auroc_attention", "val/ap_attention"}


# --- the head's losses and arguments ----------------------------------------------------------------


def test_the_regression_losses_read_the_sigmoid_of_the_logits():
    logits, target = torch.tensor([0.0, -3.0, 2.0]), torch.tensor([0.5, 0.0, 0.2])
    pred = torch.sigmoid(logits)
    assert head(loss="mse")._loss(logits, target, None, {}).item() == pytest.approx(F.mse_loss(pred, target).item())
    want = F.mse_loss(torch.log(pred + 1e-4), torch.log(target + 1e-4))
    assert head(loss="log_mse")._loss(logits, target, None, {}).item() == pytest.approx(want.item(), rel=1e-6)


def test_the_training_step_fits_the_teachers_mixed_label(tmp_path):
    """The teacher's share enters the loss the optimiser sees, not only `_distilled`."""
    from depmask.predictor import DependencyHead

    torch.manual_seed(1)
    path = DependencyHead(8, dim=16, layers=1, heads=2, base_fingerprint="base@x").save_pretrained(tmp_path / "t")
    module = head(base_fingerprint="base@x", teacher=str(path), teacher_weight=0.5)
    module.log = lambda *a, **k: None
    batch = state_batch(torch.tensor([[True] * 3, [True, True, False]]), 6)
    logits, target, _, full = module._pairs(batch)
    label = module._distilled(target, batch)
    loss = module.training_step(batch, 0)
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, label).item(), rel=1e-6)
    assert loss.item() != pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-4)
    # the prefix loss is a BCE loss too: a teacher is accepted with it
    assert head(base_fingerprint="base@x", teacher=str(path), loss="bce_prefix")._teacher is not None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"positive_threshold": 1.0}, r"`positive_threshold` \(1.0\) must lie in \(0, 1\)"),
    ({"positive_threshold": 0.0}, r"`positive_threshold` \(0.0\) must lie in \(0, 1\)"),
    ({"hidden_size": 0}, r"`hidden_size` \(0\) must be >= 1"),
    ({"warmup_steps": -1}, r"`warmup_steps` \(-1\) must be >= 0"),
    ({"precision_k": 0}, r"`precision_k` \(0\) must be >= 1"),
    ({"lr": 0.0}, r"`lr` \(0.0\) must be a finite number > 0"),
    ({"loss": "l1"}, r"`loss` \('l1'\) must be one of"),
])
def test_bad_head_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        head(**kwargs)


# --- the MDLM's optimiser and noise -----------------------------------------------------------------


def mdlm(**kw) -> MDLMModule:
    torch.manual_seed(0)
    return MDLMModule(**{"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
                         "export_dir": None, "vocab_size": 12, "mask_token_id": 11, "pad_token_id": 0,
                         "eos_token_id": 1, **kw})


def test_the_mdlm_decays_matrices_only_with_llada_betas():
    """Weight decay on the ≥ 2-D weights (embeddings, projections), none on biases and norm
    scales; AdamW's betas (0.9, 0.98)."""
    module = mdlm(weight_decay=0.1)
    module.trainer = SimpleNamespace(estimated_stepping_batches=4)
    groups = module.configure_optimizers()["optimizer"].param_groups
    by_decay = {g["weight_decay"]: g["params"] for g in groups}
    assert set(by_decay) == {0.1, 0.0} and all(g["betas"] == (0.9, 0.98) for g in groups)
    assert by_decay[0.1] and all(p.dim() >= 2 for p in by_decay[0.1])
    assert by_decay[0.0] and all(p.dim() < 2 for p in by_decay[0.0])
    assert len(by_decay[0.1]) + len(by_decay[0.0]) == len(list(module.parameters()))


def test_the_mdlm_warm_up_is_never_longer_than_the_fit():
    """A warm-up longer than the fit ends at the fit's last step: the peak rate is reached."""
    module = mdlm(warmup_steps=10)
    assert lr_factors(module, total=4, steps=4) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    module = head(warmup_steps=10)
    assert lr_factors(module, total=4, steps=4) == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_the_training_noise_is_keyed_by_data_seed_epoch_and_batch():
    """Every (epoch, batch) draws masks of its own, the same again on a resume; another data seed
    draws others."""
    module = mdlm()

    def draw(seed, epoch, batch):
        module.trainer = SimpleNamespace(datamodule=SimpleNamespace(seed=seed), current_epoch=epoch, global_rank=0)
        return tuple(torch.rand(4, generator=module._noise(batch, torch.device("cpu"))).tolist())

    keys = [(0, e, b) for e in range(2) for b in range(3)] + [(1, 0, 0)]
    draws = [draw(*k) for k in keys]
    assert len(set(draws)) == len(keys)
    assert draw(0, 1, 2) == draws[keys.index((0, 1, 2))]


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_a_masking_floor_outside_the_open_unit_interval_is_refused(eps):
    with pytest.raises(ValueError, match=rf"`eps` \({eps}\) must lie in \(0, 1\)"):
        mdlm(eps=eps)


def test_a_card_without_a_model_beside_it_is_left_in_place(tmp_path):
    from depmask.train.mdlm_module import set_aside_previous_card

    (tmp_path / "README.md").write_text("notes")
    assert set_aside_previous_card(tmp_path) == [] and (tmp_path / "README.md").read_text() == "notes"
    assert not (tmp_path / "previous").exists()


# --- the seeded epoch order -------------------------------------------------------------------------


def test_the_epoch_order_is_a_permutation_seeded_from_the_run(monkeypatch):
    from depmask.train.epoch_sampler import EpochShuffle

    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    sampler = EpochShuffle(7)
    assert sampler.seed == 5 and len(sampler) == 7 and sorted(sampler) == list(range(7))
    assert list(sampler) == list(EpochShuffle(7, seed=5))
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert EpochShuffle(7).seed == 0


# --- train_head ---------------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def _set_up_train_head(monkeypatch, **kwargs):
    """What `train_head` builds (data module, head, trainer), stopped before any training."""
    from depmask.train import head_fit

    seen = {}

    def data(harvest, **kw):
        seen["data"] = kw
        return SimpleNamespace(hidden_size=8, fingerprint="base@x", manifest={})

    class Trainer:
        def __init__(self, **kw):
            seen["trainer"] = kw

        def fit(self, module, datamodule=None):
            seen["module"] = module
            raise _Stop

    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # `seed_everything` sets it: restored after the test
    monkeypatch.setattr(head_fit, "HeadDataModule", data)
    monkeypatch.setattr(head_fit.L, "Trainer", Trainer)
    with pytest.raises(_Stop):
        head_fit.train_head("h", kwargs.pop("export_dir"), progress=False, **kwargs)
    return seen


def test_train_head_checkpoints_the_best_auroc_with_its_defaults(monkeypatch, tmp_path):
    seen = _set_up_train_head(monkeypatch, export_dir=str(tmp_path / "head"), batch_size=8, val_fraction=0.2,
                              epochs=2)
    (ckpt,) = seen["trainer"]["callbacks"]
    assert (ckpt.monitor, ckpt.mode) == ("val/auroc", "max")
    assert seen["data"] == {"val_fraction": 0.2, "batch_size": 8} and seen["trainer"]["max_epochs"] == 2
    h = seen["module"].hparams
    assert (h.dim, h.layers, h.lr, h.hidden_size, h.export_dir) == (128, 2, 2e-3, 8, str(tmp_path / "head"))
    assert _set_up_train_head(monkeypatch, export_dir=str(tmp_path / "h2"), lr=5e-4, dim=32)["module"].hparams.lr == 5e-4


def test_train_head_refuses_linked_arguments_and_module_kwargs_drops_them(tmp_path):
    from depmask.train.head_fit import module_kwargs, train_head

    with pytest.raises(ValueError, match=r"train_head: \['hidden_size'\] are set from the harvest"):
        train_head("no-such-harvest", tmp_path / "head", hidden_size=8)
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  dim: 8\n  export_dir: elsewhere\n  hidden_size: 3\n")
    assert module_kwargs(config) == {"dim": 8}


# --- the Lightning harvest loop -----------------------------------------------------------------------


def test_the_harvest_progress_adds_up_each_groups_figures_and_skips_fillers():
    from depmask.train.harvest import HarvestProgress

    progress = HarvestProgress()
    trainer = SimpleNamespace(is_global_zero=False, world_size=1)
    for out in (SimpleNamespace(example_ids=["a", "b"], records=[0] * 5, pairs=40, forwards=9, probe_forwards=3),
                None,  # a rank's filler group
                SimpleNamespace(example_ids=["c"], records=[0] * 2, pairs=6, forwards=4, probe_forwards=1)):
        progress.on_predict_batch_end(trainer, None, out, [], 0)
    totals = progress.totals()
    assert {k: totals[k] for k in ("examples", "states", "pairs", "forwards", "probe_forwards")} == {
        "examples": 3, "states": 7, "pairs": 46, "forwards": 13, "probe_forwards": 4}
    assert totals["pairs_per_s"] == pytest.approx(totals["states_per_s"] * 46 / 7, rel=1e-6)


def test_a_filler_group_harvests_and_writes_nothing_and_a_tokenizer_without_pad_pads_with_eos(tmp_path):
    from depmask.train.harvest import HarvestModule, ShardWriter

    def denoiser(pad, eos):
        return SimpleNamespace(model=torch.nn.Identity(), tokenizer=SimpleNamespace(pad_token_id=pad), eos_ids=eos)

    assert HarvestModule(denoiser(None, [7, 2]), cfg=None).pad_id == 7
    assert HarvestModule(denoiser(None, []), cfg=None).pad_id == 0
    assert HarvestModule(denoiser(3, [7]), cfg=None).pad_id == 3
    assert HarvestModule(denoiser(3, [7]), cfg=None).predict_step([], 0) is None
    ShardWriter(tmp_path / "h", 8, "m@1").write_on_batch_end(None, None, None, [], [], 0)
    assert not (tmp_path / "h").exists()


def test_a_resume_with_nothing_left_still_expects_every_example(tmp_path):
    from depmask.data_gen import HarvestConfig
    from depmask.train.harvest import run_harvest
    from tests.conftest import EMBEDDED

    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"], examples_per_task=2,
                        states_per_example=1, batch_size=2)
    quiet = {"accelerator": "cpu", "enable_progress_bar": False}
    first = run_harvest(cfg, quiet)
    again = run_harvest(cfg, quiet)
    assert (first["expected_examples"], first["examples"]) == (2, 2)
    assert (again["expected_examples"], again["skipped_examples"], again["examples"]) == (2, 2, 0)


def test_no_example_is_decoded_in_the_sanity_check(monkeypatch):
    """Lightning discards what the sanity check logs: decoding there only cost time."""
    import depmask.eval

    monkeypatch.setattr(depmask.eval, "decode_accuracy", lambda *a, **k: pytest.fail("decoded in the sanity check"))
    module = mdlm(val_decode_items=2)
    tasks = [SimpleNamespace(name="sort")]
    module.trainer = SimpleNamespace(sanity_checking=True, datamodule=SimpleNamespace(tasks=tasks, seed=0))
    module.on_validation_epoch_end()
