"""Harvesting as a Lightning `predict`: the module, the shard writer, the progress bar, the run.

`Trainer.predict` over groups of examples gives scale-out from an existing engine: with
`--trainer.devices N --trainer.strategy ddp [--trainer.num_nodes K]` every rank receives a disjoint
share of the groups (Lightning's unrepeated distributed sampler for predict) and writes its own
shards; rank 0 writes the manifest once every rank is done. The work itself is
`depmask.data_gen.harvest_group`; this module only wires it into Lightning.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from depmask.data_gen import HarvestConfig, build_items, group_items, harvest_group, prepare_output
from depmask.data_gen.harvest import items_digest
from depmask.data_gen.prompts import PromptItem
from depmask.data_gen.schema import records_to_table
from depmask.data_gen.shards import (
    SHARDS,
    clean_incomplete,
    clean_stale_temporaries,
    done_examples,
    foreign_shards,
    harvest_id,
    write_atomic,
    write_manifest,
    write_shard,
)
from depmask.decoding.influence import check_topk
from depmask.models import HFDenoiser


class HarvestModule(pl.LightningModule):
    """A frozen denoiser whose `predict_step` harvests one group of examples."""

    def __init__(self, denoiser: HFDenoiser, cfg: HarvestConfig):
        super().__init__()
        self.denoiser, self.cfg = denoiser, cfg
        self.model = denoiser.model  # registered, so Lightning moves it to the rank's device
        tok = denoiser.tokenizer
        self.pad_id = getattr(tok, "pad_token_id", None)
        if self.pad_id is None:
            self.pad_id = denoiser.eos_ids[0] if denoiser.eos_ids else 0

    def predict_step(self, batch: list[PromptItem], batch_idx: int = 0):
        if not batch:  # a rank's filler group: fewer groups were left than ranks
            return None
        with torch.inference_mode():
            return harvest_group(self.denoiser, batch, self.cfg, self.pad_id)


class ShardWriter(BasePredictionWriter):
    """Writes each group's records as one atomic shard (and its sidecar)."""

    def __init__(self, output: str | Path, hidden_size: int, fingerprint: str, harvest: str | None = None):
        super().__init__(write_interval="batch")
        self.output, self.hidden_size, self.fingerprint = Path(output), hidden_size, fingerprint
        self.harvest = harvest  # `harvest_id`, recorded in each sidecar

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if prediction is None:  # a filler group
            return
        table = records_to_table(prediction.records, self.hidden_size)
        write_shard(self.output, table, prediction.example_ids, self.fingerprint, self.harvest)


class HarvestProgress(Callback):
    """Rank 0's tqdm bar over its batches, with states/s and influence pairs/s; its totals."""

    def __init__(self):
        self.states = self.pairs = self.examples = self.forwards = self.probe_forwards = 0
        self.start = time.perf_counter()
        self.bar = None

    def on_predict_start(self, trainer, pl_module):
        self.start = time.perf_counter()
        if trainer.is_global_zero:
            desc = "harvest" if trainer.world_size == 1 else f"harvest (rank 0 of {trainer.world_size})"
            self.bar = tqdm(total=sum(trainer.num_predict_batches), desc=desc, unit="batch", dynamic_ncols=True)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if outputs is None:  # a filler group
            return
        self.examples += len(outputs.example_ids)
        self.states += len(outputs.records)
        self.pairs += outputs.pairs
        self.forwards += outputs.forwards
        self.probe_forwards += outputs.probe_forwards
        if self.bar is not None:
            secs = max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(1)
            self.bar.set_postfix(states_s=f"{self.states / secs:.1f}", pairs_s=f"{self.pairs / secs:.0f}")

    def on_predict_end(self, trainer, pl_module):
        if self.bar is not None:
            self.bar.close()

    def totals(self) -> dict:
        secs = time.perf_counter() - self.start
        return {"examples": self.examples, "states": self.states, "pairs": self.pairs,
                "forwards": self.forwards, "probe_forwards": self.probe_forwards, "seconds": secs,
                "states_per_s": self.states / max(secs, 1e-9), "pairs_per_s": self.pairs / max(secs, 1e-9)}


def _one_group(batch: list[list[PromptItem]]) -> list[PromptItem]:
    return batch[0]


def _check_inputs(cfg: HarvestConfig) -> None:
    """What can be checked without the model, before it loads (minutes for an 8B one): the prompts
    file exists; the tasks are known, named once, and have their split and data; each example's
    `block_length` divides its `gen_length` (as `prompts.build_items` will choose them)."""
    from depmask.data_gen.prompts import item_lengths, read_prompt_file
    from depmask.decoding.loop import check_lengths
    from depmask.eval.runner import check_tasks
    from depmask.tasks.adapter import TaskAdapter

    if cfg.prompts_file is not None:
        if not Path(cfg.prompts_file).exists():
            raise ValueError(f"`prompts_file` ({cfg.prompts_file!r}) does not exist (a .jsonl file or a "
                             "`datasets.save_to_disk` directory)")
        read_prompt_file(cfg.prompts_file)  # every row, named by its number
        gen, block = item_lengths(cfg)
        check_lengths(gen, block, gen)
        if cfg.prompts_chat:  # the tokenizer alone, not the model: a template it lacks is named now
            from transformers import AutoTokenizer

            from depmask.tasks.benchmarks.base import check_chat

            try:
                tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=True, local_files_only=True)
            except (OSError, ValueError):
                return  # named when the model loads
            check_chat(tokenizer, True, "prompts_chat")
        return
    check_tasks(list(cfg.tasks), cfg.task_kwargs, split=cfg.split, n=cfg.examples_per_task, seed=cfg.seed)
    for name in cfg.tasks:
        gen, block = item_lengths(cfg, TaskAdapter.build(name, **cfg.task_kwargs.get(name, {})))
        check_lengths(gen, block, gen)


def run_harvest(cfg: HarvestConfig, trainer_kwargs: dict | None = None, record: bytes | None = None) -> dict:
    """Harvest (or resume) `cfg.output`; returns this run's summary (rank 0's view).

    `record` (the command's resolved YAML) is written to `harvest.yaml` once the output directory
    is known to hold this harvest, so a refused run leaves an existing harvest's record as it was.
    """
    _check_inputs(cfg)
    denoiser = HFDenoiser.from_pretrained(cfg.model, dtype=cfg.dtype, capture_layers=cfg.capture_layers)
    if denoiser.tokenizer is None:
        raise ValueError(f"`model` ({cfg.model}) has no tokenizer files; the harvest needs one to encode prompts")
    check_topk(cfg.topk, denoiser.vocab_size)  # more were taken as all of them, and recorded as asked
    items = build_items(cfg, denoiser.tokenizer)
    out = Path(cfg.output)
    kwargs = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
              "enable_model_summary": False, "accelerator": "auto", "devices": 1}
    kwargs.update(trainer_kwargs or {})
    progress = HarvestProgress()
    writer = ShardWriter(out, denoiser.hidden_size, denoiser.fingerprint)
    callbacks = list(kwargs.pop("callbacks", None) or [])
    trainer = pl.Trainer(callbacks=[*callbacks, writer, progress], **kwargs)
    spec = prepare_output(cfg, denoiser.fingerprint, denoiser.hidden_size, denoiser.vocab_size,
                          [it.example_id for it in items], items_sha256=items_digest(items),
                          precision=str(trainer.precision), write=trainer.is_global_zero,
                          device=trainer.strategy.root_device.type)
    writer.harvest = harvest_id(spec)
    foreign = foreign_shards(out, writer.harvest)
    if foreign:  # its examples would be taken as done, with another harvest's states
        raise ValueError(f"{out / SHARDS} holds {len(foreign)} shard(s) written by another harvest (other settings "
                         f"or examples under the same names): {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}; "
                         "move them and their .json sidecars out, then run the harvest again")
    if record is not None and trainer.is_global_zero:
        write_atomic(out / "harvest.yaml", record)
    groups = group_items(items, cfg.batch_size)
    if trainer.is_global_zero:
        removed = clean_incomplete(out)
        if removed:
            print(f"harvest: removed {len(removed)} incomplete or damaged file(s); their examples are harvested again")
    trainer.strategy.barrier()
    done = done_examples(out)  # after the cleaning: a removed shard's examples are to do
    todo = [g for g in groups if not all(it.example_id in done for it in g)]
    summary = {"skipped_examples": sum(len(g) for g in groups) - sum(len(g) for g in todo)}
    if todo:
        # every rank gets a group: Lightning's unpadded distributed sampler asserts on a rank with
        # none, so a resume with fewer groups left than ranks crashed on every retry
        todo += [[]] * max(0, trainer.world_size - len(todo))
        loader = DataLoader(todo, batch_size=1, shuffle=False, collate_fn=_one_group, num_workers=cfg.num_workers)
        trainer.predict(HarvestModule(denoiser, cfg), dataloaders=loader, return_predictions=False)
    totals = progress.totals()
    if _ranks_ran_elsewhere(trainer):  # ddp_spawn / ddp_fork / ddp_notebook: this process counted nothing
        totals = dict.fromkeys(totals)
    summary.update(totals, world_size=trainer.world_size)
    trainer.strategy.barrier()
    if trainer.is_global_zero:
        manifest = write_manifest(out, {"fingerprint": denoiser.fingerprint, "hidden_size": denoiser.hidden_size})
        clean_stale_temporaries(out)
        summary.update(total_rows=manifest["rows"], total_examples=manifest["examples"],
                       shards=len(manifest["shards"]), expected_examples=len(items))
    return summary


def _ranks_ran_elsewhere(trainer) -> bool:
    """Whether the strategy ran the ranks in child processes (spawn or fork), so that this process's
    progress counters, which the summary reports, saw none of the work."""
    from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)
