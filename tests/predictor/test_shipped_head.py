"""The shipped heads (`models/tiny-tasks-head`, and the large `models/tiny-tasks-head-large`) on
*test-split* states of the embedded model."""

import json

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from depmask.data_gen import HarvestConfig, build_items, group_items, harvest_group
from depmask.models import HFDenoiser
from depmask.predictor import DependencyHead
from depmask.predictor.io import ARCHITECTURE_KEYS, OPTIONAL_ARCHITECTURE_KEYS
from depmask.train.head_data import collate_states
from tests.conftest import EMBEDDED, ROOT

HEAD = ROOT / "models" / "tiny-tasks-head"
LARGE = ROOT / "models" / "tiny-tasks-head-large"
SHIPPED = pytest.mark.parametrize("head_dir, config", [(HEAD, "head-tiny.yaml"), (LARGE, "head-tiny-large.yaml")],
                                  ids=["small", "large"])


@pytest.mark.slow
@SHIPPED
def test_shipped_head_beats_attention_on_held_out_states(head_dir, config):
    den = HFDenoiser.from_pretrained(EMBEDDED)
    head = DependencyHead.from_pretrained(head_dir, denoiser=den)
    cfg = HarvestConfig(model=str(EMBEDDED), tasks=["sudoku4", "permutation"], split="test",
                        examples_per_task=24, states_per_example=None, batch_size=24)
    preds, atts, targets = [], [], []
    for group in group_items(build_items(cfg, den.tokenizer), cfg.batch_size):
        records = harvest_group(den, group, cfg, den.tokenizer.pad_token_id).records
        batch = collate_states([{**vars(r), "state": i} for i, r in enumerate(records)])
        pred = head.predict(batch["hidden"], batch["positions"], batch["valid"], batch["confidence"], batch["entropy"])
        pairs = batch["valid"][:, :, None] & batch["valid"][:, None, :]
        pairs &= ~torch.eye(pairs.shape[1], dtype=torch.bool)[None]
        att = batch["attention"]
        preds.append(pred[pairs].numpy())
        atts.append(np.maximum(att, att.transpose(1, 2))[pairs].numpy())
        targets.append(batch["tv"][pairs].numpy())
    y = np.concatenate(targets) >= 0.1
    head_auroc, att_auroc = roc_auc_score(y, np.concatenate(preds)), roc_auc_score(y, np.concatenate(atts))
    print(f"\nheld-out AUROC (TV >= 0.1, {y.sum()} of {y.size} pairs positive): head {head_auroc:.3f}, "
          f"attention {att_auroc:.3f}")
    assert head_auroc >= 0.90 and head_auroc >= att_auroc + 0.05


@SHIPPED
def test_shipped_head_refuses_another_model(head_dir, config):
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="fingerprint"):
        DependencyHead.from_pretrained(head_dir, denoiser=SimpleNamespace(fingerprint="other@x", hidden_size=128))


@SHIPPED
def test_shipped_head_has_the_architecture_of_the_shipped_train_config(head_dir, config):
    """`depmask train fit --config configs/train/<config>` builds the shipped head's architecture."""
    model = yaml.safe_load((ROOT / "configs" / "train" / config).read_text())["model"]
    saved = json.loads((head_dir / "config.json").read_text())
    for key, (_, default) in OPTIONAL_ARCHITECTURE_KEYS.items():  # as `from_pretrained` reads it
        saved.setdefault(key, default)
    linked = ("hidden_size", "base_fingerprint")  # from the harvest, not the config
    keys = [k for k in (*ARCHITECTURE_KEYS, *OPTIONAL_ARCHITECTURE_KEYS) if k not in linked]
    assert {k: saved[k] for k in keys} == {k: model[k] for k in keys}
