"""`HeadDataModule`: harvested states as padded batches for the dependency head.

Shapes: `b` states in a batch, `m` masked positions (padded to the batch's widest), `d` hidden.

The harvest is verified and opened memory-mapped (`load_harvest`) when the module is built, so a
corrupted or foreign directory fails before training starts, with the verify report as the
message. Train / val are split *by example id* (a stable hash decides), never by state, so no
example has states on both sides. Batches carry everything the head and the metrics need:
hidden [b, m, d], positions, valid, confidence, entropy, the TV target [b, m, m], the captured
attention [b, m, m] (for the attention baseline) and a state index (for per-state ranking).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from depmask.data_gen.dataset import (
    HarvestError,
    column_values,
    harvest_digest,
    harvest_info,
    load_harvest,
)
from depmask.stable_hash import stable_int
from depmask.train.epoch_sampler import EpochShuffle, run_seed

COLUMNS = ["example_id", "positions", "confidence", "entropy", "hidden", "attention", "tv"]


def in_val(example_id: str, val_fraction: float, seed: int) -> bool:
    """Stable split: an example is in val iff its hash falls below `val_fraction`."""
    return stable_int(seed, example_id) / 2**64 < val_fraction


class _States(Dataset):
    def __init__(self, data, indices: list[int]):
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        row = self.data[self.indices[i]]
        row["state"] = self.indices[i]
        return row

    def __getitems__(self, items: list[int]) -> list[dict]:
        """A batch's rows in one read of the table (the DataLoader calls this when it exists):
        about 2.5x faster than one read per row on the shipped harvest."""
        rows = [self.indices[i] for i in items]
        columns = self.data[rows]
        return [{**{name: values[j] for name, values in columns.items()}, "state": row} for j, row in enumerate(rows)]


def collate_states(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of harvest rows to one batch."""
    b = len(rows)
    m = max(len(r["positions"]) for r in rows)
    # from a row with masked positions: a row without any stores its hidden states as [0, 0]
    d = next((r["hidden"].shape[-1] for r in rows if len(r["positions"])), 1)
    hidden = torch.zeros(b, m, d, dtype=torch.float16)
    positions = torch.zeros(b, m, dtype=torch.long)
    valid = torch.zeros(b, m, dtype=torch.bool)
    conf, ent = torch.zeros(b, m), torch.zeros(b, m)
    tv, att = torch.zeros(b, m, m), torch.zeros(b, m, m)
    # written through NumPy views of the batch tensors: the rows' arrays may be read-only views
    # of the memory-mapped table, which torch.from_numpy warns about
    views = {name: t.numpy() for name, t in (("hidden", hidden), ("positions", positions), ("confidence", conf),
                                              ("entropy", ent), ("tv", tv), ("attention", att))}
    for i, r in enumerate(rows):
        k = len(r["positions"])
        if k == 0:
            continue
        valid[i, :k] = True
        for name in ("hidden", "positions", "confidence", "entropy"):
            views[name][i, :k] = np.asarray(r[name])
        for name in ("tv", "attention"):
            views[name][i, :k, :k] = np.stack(r[name])
    state = torch.tensor([r["state"] for r in rows], dtype=torch.long)
    return {"hidden": hidden, "positions": positions, "valid": valid, "confidence": conf, "entropy": ent,
            "tv": tv, "attention": att, "state": state}


def _capped(rows: list[int], ids: list[str], cap: int | None, seed: int) -> list[int]:
    """The rows of whole examples, taken in an order seeded by `seed` until `cap` rows would be
    passed (the first `cap` rows in table order dropped whole tasks: a harvest is stored task by
    task); the rows keep their table order. At least one example, cut to `cap` if it is longer."""
    if cap is None or cap >= len(rows):
        return rows
    by_example: dict[str, list[int]] = {}
    for i in rows:
        by_example.setdefault(ids[i], []).append(i)
    order = sorted(by_example, key=lambda e: stable_int("max_train_states", seed, e))
    kept: list[int] = []
    for e in order:
        if kept and len(kept) + len(by_example[e]) > cap:
            continue
        kept += by_example[e][:cap]
        if len(kept) >= cap:
            break
    return sorted(kept)


class HeadDataModule(L.LightningDataModule):
    def __init__(self, harvest: str, val_fraction: float = 0.1, batch_size: int = 64, num_workers: int = 0,
                 split_seed: int = 0, max_train_states: int | None = None):
        """The states of a harvest, split by example into training and validation.

        Args:
            harvest: a harvest directory (`depmask harvest`), verified before use.
            val_fraction: share of *examples* held out for validation.
            batch_size: states per batch.
            num_workers: DataLoader workers.
            split_seed: seeds the example-level split.
            max_train_states: use at most this many training states (None: all): whole examples,
                drawn in a seeded order (`split_seed`) over every task, until the next would pass it.
        """
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"`val_fraction` ({val_fraction}) must lie in (0, 1)")
        if batch_size < 1:
            raise ValueError(f"`batch_size` ({batch_size}) must be >= 1")
        if num_workers < 0:
            raise ValueError(f"`num_workers` ({num_workers}) must be >= 0 (0 = load in the main process)")
        if max_train_states is not None and max_train_states < 1:
            raise ValueError(f"`max_train_states` ({max_train_states}) must be >= 1, or None for all")
        self.save_hyperparameters()  # into checkpoints: a resume with other data is refused (`DepmaskCLI`)
        self.harvest, self.batch_size, self.num_workers = harvest, batch_size, num_workers
        info = harvest_info(harvest)
        self.hidden_size: int = int(info["hidden_size"])
        self.fingerprint: str = info["fingerprint"]
        data = load_harvest(harvest).select_columns(COLUMNS)
        ids = column_values(data, "example_id")
        val_mask = np.array([in_val(e, val_fraction, split_seed) for e in ids])
        self.train_idx = _capped(np.flatnonzero(~val_mask).tolist(), ids, max_train_states, split_seed)
        self.val_idx = np.flatnonzero(val_mask).tolist()
        if not self.train_idx or not self.val_idx:
            raise HarvestError(
                f"harvest at {harvest} has {len(set(ids))} examples: too few for a train/val split at "
                f"`val_fraction` {val_fraction} ({len(self.train_idx)} train / {len(self.val_idx)} val states)"
            )
        self.data = data
        self.train_examples = {ids[i] for i in self.train_idx}
        self.val_examples = {ids[i] for i in self.val_idx}
        self.manifest = {"harvest": str(harvest), "fingerprint": self.fingerprint,
                         # which harvest, wherever it is opened from (the path above is as given)
                         "harvest_sha256": harvest_digest(info),
                         "train_states": len(self.train_idx), "val_states": len(self.val_idx),
                         "train_examples": len(self.train_examples), "val_examples": len(self.val_examples),
                         "val_fraction": val_fraction, "split_seed": split_seed,
                         # the attention a head may read was averaged over these layers (None: the default)
                         "capture_layers": info.get("config", {}).get("capture_layers"),
                         # the target: influence at the committed value (1) or over the top-k values
                         "topk": info.get("config", {}).get("topk")}

    def _loader(self, idx: list[int], shuffle: bool, sampler=None) -> DataLoader:
        # a generator of its own: each new iterator draws its base seed from the loader's generator,
        # or else from the global one, which the head's dropout masks come from too (validation
        # every epoch or every third, and worker count, then moved the masks: other weights)
        generator = torch.Generator().manual_seed(stable_int("head-loader", run_seed(), len(idx)))
        return DataLoader(_States(self.data, idx), batch_size=self.batch_size, shuffle=shuffle,
                          sampler=sampler, collate_fn=collate_states, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, generator=generator)

    def train_dataloader(self) -> DataLoader:
        """Shuffled by epoch and seed alone (`EpochShuffle`): not by how many loaders came before."""
        return self._loader(self.train_idx, False, EpochShuffle(len(self.train_idx)))

    def val_dataloader(self) -> DataLoader:
        """Under DDP each rank validates its own states, none twice: Lightning's padding sampler
        repeated states to even out the ranks, and the reduced metrics counted them twice. (With
        fewer val states than ranks, the padding one: the unpadded one refuses an idle rank.)"""
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and 1 < torch.distributed.get_world_size() <= len(self.val_idx):
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            return self._loader(self.val_idx, False, UnrepeatedDistributedSampler(_States(self.data, self.val_idx),
                                                                                  shuffle=False))
        return self._loader(self.val_idx, False)
