"""Training data for the embedded tiny MDLM: a mixture of synthetic tasks as token batches.

Shapes: `b` batch, `l` canvas (prompt + answer, left-padded to the longest in the batch).

Each training item is a train-split example with a *freshly sampled* valid answer
(`task.sample_answer`), so a task with many right answers (a Sudoku with few givens, any ordering
of a multiset) is learned as the distribution over all of them, not as one arbitrary reference.
Left padding with an attention mask matches what the decoding loop does, and the model counts
positions from the first real token, so padding is invisible to it. Validation batches come from
the test split with fixed answers, and are used for monitoring only (the exported model is the
last one; nothing is selected on them). This module does not mask tokens (the LightningModule
applies the forward process) and holds no model.

Item `i` of epoch `e` is a function of (`seed`, `e`, `i`) alone, so the train loader needs no
shuffling to change from epoch to epoch, and it resumes exactly: a fit resumed from a checkpoint
saved in the middle of an epoch trains on that epoch's remaining batches (`_TrainLoader`), not on
its first ones a second time, and one saved after an epoch's last batch (by a step or an
epoch-end checkpoint) goes on with the next epoch. Under DDP Lightning puts a shuffling
distributed sampler on the train loader; a resumed DDP fit skips its batches in that epoch's
order too, so it trains what the uninterrupted one would have.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from depmask.models.tiny_mdlm.tokenizer import build_tokenizer
from depmask.tasks import Example, get_task, task_symbols


def encode_example(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer (word-level: one id per token)."""
    return tokenizer.convert_tokens_to_ids(prompt.split()), tokenizer.convert_tokens_to_ids(answer.split())


def collate(items: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompt+answer rows; `answer_mask` marks the answer positions."""
    width = max(len(p) + len(a) for p, a in items)
    b = len(items)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)  # [b, l]
    attention_mask = torch.zeros(b, width, dtype=torch.long)
    answer_mask = torch.zeros(b, width, dtype=torch.bool)
    for i, (p, a) in enumerate(items):
        row = p + a
        input_ids[i, width - len(row):] = torch.tensor(row)
        attention_mask[i, width - len(row):] = 1
        answer_mask[i, width - len(a):] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}


class _FreshAnswers(Dataset):
    """`length` items drawn from a pool of examples, each with a new random valid answer."""

    def __init__(self, pool: list[tuple[object, Example]], tokenizer, length: int, seed: int):
        self.pool, self.tokenizer, self.length, self.seed = pool, tokenizer, length, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        task, ex = self.pool[rng.randrange(len(self.pool))]
        return encode_example(self.tokenizer, ex.prompt, task.sample_answer(ex, rng))


class _TrainLoader(DataLoader):
    """The train loader of `_FreshAnswers`. Each pass over it is one epoch: it first sets the
    dataset's epoch (`epoch_of()`, the trainer's), so every epoch draws new items and answers.

    It is stateful in Lightning's sense (`state_dict` / `load_state_dict`, saved in every
    checkpoint): the state is the epoch and the number of its batches trained so far (`trained`,
    counted by the data module as each batch goes to the model, not as the loader prefetches it).
    The first pass after `load_state_dict` in the same epoch skips the batches already trained, so
    a resumed fit sees the batches the interrupted one had left, in order; they are drawn and
    dropped (a few seconds for a whole epoch of the shipped config), not trained on.
    """

    def __init__(self, dataset: _FreshAnswers, *, epoch_of: Callable[[], int],
                 epoch_batches: Callable[[], float] | None = None, **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self.epoch_of = epoch_of
        self.epoch_batches = epoch_batches  # the batches an epoch trains (the trainer's, with its limit)
        self.epoch, self.trained = 0, 0
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator:
        """One epoch's batches, decided when the first one is asked for, not when the pass is made:
        Lightning makes a resumed fit's first pass before it restores its epoch counters and sets
        a distributed sampler's epoch, and then reads it as whichever epoch it resumes (the one a
        checkpoint at a last batch ended: the next one; the one an epoch-end checkpoint ended:
        that epoch, which must then yield nothing), or not at all."""
        epoch, trained = self.epoch_of(), 0
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == epoch:
            trained = resume["trained"]
        self.epoch = self.dataset.epoch = epoch
        self.trained = trained
        if trained >= min(len(self), self.epoch_batches() if self.epoch_batches else len(self)):
            return  # that epoch is done (under `limit_train_batches`, after its first batches)
        if trained and hasattr(self.sampler, "set_epoch"):  # the skipped batches in this epoch's order
            self.sampler.set_epoch(epoch)
        batches = super().__iter__()
        for _ in range(trained):
            next(batches, None)
        yield from batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "trained": self.trained}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = {"epoch": int(state_dict["epoch"]), "trained": int(state_dict["trained"])}


class _Fixed(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


class TaskMixtureDataModule(L.LightningDataModule):
    """Batches of (prompt, sampled answer) from a mixture of synthetic tasks."""

    def __init__(
        self,
        tasks: list[str] = ["sudoku4", "permutation", "sort", "addition"],  # noqa: B006
        pool_size: int = 20000,
        items_per_epoch: int = 64000,
        val_size: int = 256,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if not tasks:
            raise ValueError("`tasks` is empty: name at least one task")
        repeated = sorted({t for t in tasks if list(tasks).count(t) > 1})
        if repeated:  # it doubled the task's share of the mixture and repeated its items
            raise ValueError(f"`tasks` ({list(tasks)}) names {repeated} more than once")
        for name, v in (("pool_size", pool_size), ("items_per_epoch", items_per_epoch),
                        ("val_size", val_size), ("batch_size", batch_size)):
            if v < 1:
                raise ValueError(f"`{name}` ({v}) must be >= 1")
        if items_per_epoch < batch_size:  # the train loader drops the last partial batch: none would be left
            raise ValueError(f"`items_per_epoch` ({items_per_epoch}) is smaller than `batch_size` ({batch_size}): "
                             "an epoch would hold no training batch")
        if num_workers < 0:
            raise ValueError(f"`num_workers` ({num_workers}) must be >= 0 (0 = load in the main process)")
        self.save_hyperparameters()  # into checkpoints: a resume with other data is refused (`DepmaskCLI`)
        self.tasks = [get_task(t) for t in tasks]
        self.tokenizer = build_tokenizer(task_symbols(self.tasks))
        self.pool_size, self.items_per_epoch, self.val_size = pool_size, items_per_epoch, val_size
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self._train: _FreshAnswers | None = None
        self._val: _Fixed | None = None
        self.longest = 0  # tokens of the longest sequence (prompt + answer), set by `setup`

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            per_task = max(1, self.pool_size // len(self.tasks))
            pool = [(t, ex) for t in self.tasks for ex in t.examples("train", per_task, seed=self.seed)]
            self._train = _FreshAnswers(pool, self.tokenizer, self.items_per_epoch, self.seed)
            per_val = max(1, self.val_size // len(self.tasks))
            val = [encode_example(self.tokenizer, ex.prompt, ex.answer)
                   for t in self.tasks for ex in t.examples("test", per_val, seed=self.seed)]
            self._val = _Fixed(val)
            # what the model's positions must hold: the longest val item or pool example (reference answer)
            self.longest = max([len(p) + len(a) for p, a in val] +
                               [len(ex.prompt.split()) + len(ex.answer.split()) for _, ex in pool])

    def train_dataloader(self) -> DataLoader:
        assert self._train is not None
        return _TrainLoader(self._train, epoch_of=lambda: self.trainer.current_epoch if self.trainer is not None else 0,
                            epoch_batches=lambda: self.trainer.num_training_batches if self.trainer is not None
                            else float("inf"),
                            batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                            collate_fn=lambda items: collate(items, self.pad_id), drop_last=True)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts the train batches that reach the model (the train loader's resumable state). The
        loader is the trainer's, which Lightning may have rebuilt from ours (e.g. for a distributed
        sampler)."""
        loader = self.trainer.train_dataloader if self.trainer is not None and self.trainer.training else None
        if isinstance(loader, _TrainLoader):
            loader.trained += 1
        return batch

    def val_dataloader(self) -> DataLoader:
        """Under DDP each rank validates its own items, none twice: Lightning's padding sampler
        repeated items to even out the ranks, and `val/loss` counted them twice (with fewer val
        items than ranks, the padding one: the unpadded one refuses an idle rank)."""
        assert self._val is not None
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and 1 < torch.distributed.get_world_size() <= len(self._val):
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(self._val, shuffle=False)
        return DataLoader(self._val, batch_size=self.batch_size, num_workers=self.num_workers, sampler=sampler,
                          collate_fn=lambda items: collate(items, self.pad_id))
