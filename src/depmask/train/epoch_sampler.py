"""`EpochShuffle`: the training order of epoch e as a function of (seed, e) alone.

A `DataLoader(shuffle=True)` draws each epoch's permutation from the global torch generator, which
every new loader iterator also draws from (its base seed): validation loaders with
`num_workers=0` make a new iterator every validation epoch, persistent workers make theirs once.
So epoch e's order depended on `--data.num_workers` and on how often validation ran, and the same
seed gave other heads. Here each epoch's permutation comes from a generator of its own, seeded
from the run's seed (`seed_everything`, which Lightning passes to DDP children as
`PL_GLOBAL_SEED`) and the epoch Lightning sets (`set_epoch`); under DDP Lightning splits it among
the ranks (every rank draws the same permutation).
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Sampler

from depmask.stable_hash import stable_int


def run_seed() -> int:
    """The run's seed as `seed_everything` left it for this process and its DDP children (0 unseeded)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EpochShuffle(Sampler[int]):
    def __init__(self, n: int, seed: int | None = None):
        self.n = n
        self.seed = run_seed() if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(stable_int("train-order", self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())
