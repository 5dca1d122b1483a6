"""Details of the dependency head's data module and of `depmask train fit|validate` that the
fit-level tests do not see: the manifest the module records, the split and the cap following
`split_seed`, a split without training states, a batch read at once keeping table indices, the
collated batch's dtypes and state ids, the loaders' order and DDP sampler choice, the CLI's
printed defaults, where a resumed run keeps its checkpoints, which directories a new fit is
refused, and the moved-run rebasing of `RunCheckpoint` state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import SequentialSampler

from depmask.cli import main
from depmask.data_gen.dataset import HarvestError
from depmask.train import head_cli
from depmask.train.epoch_sampler import EpochShuffle
from depmask.train.head_data import HeadDataModule, _capped, _States, collate_states, in_val
from tests.data_gen.records import FP, make_harvest, record
from tests.train.head_cli_run import CONFIG

IDS = tuple(f"task:{i}" for i in range(20))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A hand-made harvest of 20 examples (two states each), whose harvest.json records a digest
    and the capture settings a real harvest would."""
    out = make_harvest(tmp_path_factory.mktemp("small"), groups=(IDS[:10], IDS[10:]))
    info = json.loads((out / "harvest.json").read_text())
    info.update(items_sha256="ab" * 32, config={"capture_layers": [1, 2], "topk": 3})
    (out / "harvest.json").write_text(json.dumps(info))
    return out


def _ids(dm):
    return [str(e) for e in dm.data["example_id"][:]]


# --- the data module ------------------------------------------------------------------------------


def test_the_manifest_names_the_harvest_its_split_and_its_capture_settings(small):
    dm = HeadDataModule(str(small), val_fraction=0.4, split_seed=2)
    assert dm.manifest == {
        "harvest": str(small), "fingerprint": FP, "harvest_sha256": "ab" * 32,
        "train_states": len(dm.train_idx), "val_states": len(dm.val_idx),
        "train_examples": len(dm.train_examples), "val_examples": len(dm.val_examples),
        "val_fraction": 0.4, "split_seed": 2, "capture_layers": [1, 2], "topk": 3,
    }
    assert dm.hidden_size == 6 and dm.fingerprint == FP


def test_the_split_and_the_training_cap_follow_split_seed(small):
    # both the example-level split and the cap's draw take `split_seed`, not a fixed 0
    ids = _ids(HeadDataModule(str(small), val_fraction=0.4))
    for seed in (3, 5):
        full = HeadDataModule(str(small), val_fraction=0.4, split_seed=seed)
        assert full.val_examples == {e for e in IDS if in_val(e, 0.4, seed)}
        assert full.train_examples == set(IDS) - full.val_examples
        capped = HeadDataModule(str(small), val_fraction=0.4, split_seed=seed, max_train_states=6)
        assert capped.train_idx == _capped(full.train_idx, ids, 6, seed) and len(capped.train_idx) == 6
        assert capped.val_idx == full.val_idx  # the cap leaves validation alone
    full = HeadDataModule(str(small), val_fraction=0.4, split_seed=3)
    assert _capped(full.train_idx, ids, 6, 3) != _capped(full.train_idx, ids, 6, 0)  # the check can see it


def test_a_split_with_no_training_state_is_refused(small):
    with pytest.raises(HarvestError, match=r"has 20 examples: too few .* \(0 train / 40 val states\)"):
        HeadDataModule(str(small), val_fraction=0.999999)


def test_the_training_cap_cuts_the_first_example_when_every_one_is_longer():
    # no example fits whole: the first of the draw is cut to the cap, not nothing kept
    ids = ["a"] * 5 + ["b"] * 4
    for seed in range(4):
        kept = _capped(list(range(9)), ids, 2, seed)
        assert len(kept) == 2 and len({ids[i] for i in kept}) == 1


def test_a_batch_read_at_once_carries_each_rows_table_index(small):
    dm = HeadDataModule(str(small), val_fraction=0.4)
    ids = _ids(dm)
    states = _States(dm.data, [5, 2, 7])
    rows = states.__getitems__([2, 0])
    assert [r["state"] for r in rows] == [7, 5]
    assert [str(r["example_id"]) for r in rows] == [ids[7], ids[5]]
    assert np.array_equal(rows[0]["positions"], dm.data[7]["positions"])


def test_collate_keeps_hidden_in_half_precision_and_each_rows_state():
    rows = [{**vars(record("a", 0, 3)), "state": 7}, {**vars(record("b", 0, 2)), "state": 3}]
    batch = collate_states(rows)
    assert batch["hidden"].dtype == torch.float16 and batch["positions"].dtype == torch.long
    assert batch["confidence"].dtype == batch["tv"].dtype == torch.float32
    assert batch["state"].tolist() == [7, 3]


def test_the_val_loader_keeps_table_order_and_the_train_loader_shuffles_by_epoch(small):
    dm = HeadDataModule(str(small), val_fraction=0.4, batch_size=3)
    batches = list(dm.val_dataloader())
    assert [len(b["state"]) for b in batches[:-1]] == [3] * (len(batches) - 1)
    assert torch.cat([b["state"] for b in batches]).tolist() == dm.val_idx
    train = dm.train_dataloader()
    assert isinstance(train.sampler, EpochShuffle) and train.batch_size == 3
    seen = torch.cat([b["state"] for b in train]).tolist()
    assert sorted(seen) == dm.train_idx and seen != dm.train_idx


def test_under_ddp_each_val_state_is_validated_once_and_an_idle_rank_falls_back(small, monkeypatch):
    dm = HeadDataModule(str(small), val_fraction=0.4)
    n = len(dm.val_idx)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 3)
    seen = []
    for rank in range(3):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, r=rank, **k: r)
        seen += [dm.val_idx[i] for i in dm.val_dataloader().sampler]
    assert sorted(seen) == dm.val_idx
    # more ranks than states: the padding sampler (Lightning's own), not the unpadded one that refuses
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: n + 1)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: n)
    assert isinstance(dm.val_dataloader().sampler, SequentialSampler)


# --- the CLI --------------------------------------------------------------------------------------


def test_the_clis_own_defaults_without_a_config(capsys):
    # the shipped config overrides the monitor; these are what a config without one gets
    with pytest.raises(SystemExit):
        main(["train", "fit", "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["seed_everything"] == 0 and cfg["trainer"]["default_root_dir"] == "runs/head"
    assert cfg["trainer"]["logger"]["init_args"]["name"] == "dependency-head"
    ck, es = cfg["checkpoint"], cfg["early_stopping"]
    assert (ck["monitor"], ck["mode"], ck["filename"], ck["save_last"]) == ("val/auroc", "max", "head-{step}", True)
    assert (es["monitor"], es["mode"], es["patience"], es["check_on_train_epoch_end"]) == ("val/auroc", "max", 5, False)


class _Stop(Exception):
    pass


def _resolved(monkeypatch, *args):
    """The fit config after `before_instantiate_classes`, without building the modules."""
    seen = {}

    def stop(self):
        seen["fit"] = self.config["fit"]
        raise _Stop

    monkeypatch.setattr(head_cli.HeadCLI, "instantiate_classes", stop)
    with pytest.raises(_Stop):
        main(["train", "fit", "--config", str(CONFIG), "--trainer.logger", "false", *args])
    return seen["fit"]


def test_a_resume_keeps_its_runs_directory_unless_one_is_given(tmp_path, monkeypatch):
    # stub the checkpoint reading: only where the checkpoints go is checked here
    monkeypatch.setattr(head_cli.HeadCLI, "_parse_ckpt_path", lambda self: None)
    ckpt = tmp_path / "old" / "last.ckpt"
    ticks = iter(range(100))  # a clock crossing a second between the subcommands' parsers
    monkeypatch.setattr(head_cli.time, "strftime", lambda *a: f"t{next(ticks)}")
    cfg = _resolved(monkeypatch, "--ckpt_path", str(ckpt))
    assert cfg["checkpoint"]["dirpath"] == str(ckpt.parent)
    cfg = _resolved(monkeypatch, "--ckpt_path", str(ckpt), "--checkpoint.dirpath", str(tmp_path / "new"))
    assert cfg["checkpoint"]["dirpath"] == str(tmp_path / "new")


def test_a_new_fit_is_refused_a_directory_with_any_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("")
    assert _resolved(monkeypatch, "--checkpoint.dirpath", str(run))["checkpoint"]["dirpath"] == str(run)
    (run / "head-step=3.ckpt").write_bytes(b"")  # a top-k checkpoint alone, no last.ckpt
    with pytest.raises(ValueError, match=r"holds another run's checkpoints"):
        _resolved(monkeypatch, "--checkpoint.dirpath", str(run))


def test_a_parse_error_names_the_train_command(capsys):
    with pytest.raises(SystemExit):
        main(["train", "fit", "--no_such_flag", "1"])
    assert "depmask train" in capsys.readouterr().err


# --- a moved run's checkpoint state ---------------------------------------------------------------


def _state(old):
    return {"dirpath": str(old), "best_model_path": str(old / "head-step=2.ckpt"),
            "kth_best_model_path": str(old / "head-step=1.ckpt"), "last_model_path": str(old / "last.ckpt"),
            "best_k_models": {str(old / "head-step=2.ckpt"): 0.9, str(old / "head-step=1.ckpt"): 0.8,
                              "/elsewhere/head-step=0.ckpt": 0.5},
            "best_model_score": 0.9}


def test_a_moved_runs_checkpoint_state_is_rebased_onto_the_files_found_there(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    new.mkdir()
    for name in ("head-step=2.ckpt", "last.ckpt"):  # head-step=1 was not moved along
        (new / name).write_bytes(b"")
    moved = head_cli._rebased(_state(old), old, new)
    assert moved == {**_state(old), "dirpath": str(new), "best_model_path": str(new / "head-step=2.ckpt"),
                     "kth_best_model_path": "", "last_model_path": str(new / "last.ckpt"),
                     "best_k_models": {str(new / "head-step=2.ckpt"): 0.9, "/elsewhere/head-step=0.ckpt": 0.5}}


def test_a_directory_holding_none_of_the_runs_files_is_a_new_one(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    new.mkdir()
    state = {**_state(old), "best_k_models": {str(old / "head-step=2.ckpt"): 0.9}}
    assert head_cli._rebased(state, old, new) is None
    (new / "last.ckpt").write_bytes(b"")  # the last checkpoint alone says it is the run, moved
    assert head_cli._rebased(state, old, new)["last_model_path"] == str(new / "last.ckpt")
