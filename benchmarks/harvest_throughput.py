"""Harvest throughput: wall time of harvesting (decode + influences + records + shard writes)
divided by the time of the forwards it needs.

    python benchmarks/harvest_throughput.py --out outputs/bench/harvest_throughput.json

The harvest keeps every state of every trajectory (`states_per_example` None), so each state costs
its trajectory forward (which is also the unperturbed forward of the influence) plus its share of
the ⌈copies / chunk⌉ batched perturbed forwards. Every forward the harvest makes is logged (shape
and whether hidden states / attention were asked for); "the forwards it needs" is the same list
replayed through the same denoiser with nothing else around it. The ratio is what the harvest adds
on top: statistics, the influence arithmetic, copying to host, building Arrow tables, writing
shards. Median of `--repeats` runs after a warm-up. Target: ratio <= 1.3.
Default model: the embedded `models/tiny-tasks` on the `sudoku4` train split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_args import count, natural
from forward_log import LoggedDenoiser, replay

from depmask.data_gen import (
    HarvestConfig,
    build_items,
    group_items,
    harvest_group,
    records_to_table,
)
from depmask.data_gen.shards import write_shard
from depmask.decoding.influence import check_topk
from depmask.models import HFDenoiser
from depmask.models.hf_denoiser import check_device
from depmask.tasks.adapter import TaskAdapter
from depmask.tasks.benchmarks import DataNotFoundError


def harvest_once(den, groups, cfg, pad_id, out: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    states = pairs = 0
    for group in groups:
        res = harvest_group(den, group, cfg, pad_id)
        write_shard(out, records_to_table(res.records, den.hidden_size), res.example_ids, den.fingerprint)
        states, pairs = states + len(res.records), pairs + res.pairs
    return time.perf_counter() - start, states, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/tiny-tasks")
    ap.add_argument("--task", default="sudoku4")
    ap.add_argument("--examples", type=count, default=64)
    ap.add_argument("--batch_size", type=count, default=32)
    ap.add_argument("--chunk_size", type=count, default=64, help="perturbed copies per forward")
    ap.add_argument("--topk", type=count, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=count, default=3)
    ap.add_argument("--threads", type=natural, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--out", default="outputs/bench/harvest_throughput.json")
    args = ap.parse_args()
    cfg = HarvestConfig(model=args.model, tasks=[args.task], examples_per_task=args.examples,
                        states_per_example=None, batch_size=args.batch_size, chunk_size=args.chunk_size,
                        topk=args.topk)
    try:  # before the model loads: each names its flag (a benchmark's data file is found, too)
        TaskAdapter.build(args.task).examples(cfg.split, args.examples, cfg.seed)
    except (ValueError, DataNotFoundError) as e:
        ap.error(f"--task: {e}")
    try:
        check_device(args.device)
    except ValueError as e:
        ap.error(f"--device: {e}")
    if not Path(args.model).expanduser().is_dir():
        ap.error(f"--model ({args.model!r}) is not a directory holding a model")
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        base = HFDenoiser.from_pretrained(args.model, device=args.device)
        check_topk(args.topk, base.vocab_size)
    except (OSError, ValueError) as e:
        ap.error(f"--model / --topk: {e}")
    den = LoggedDenoiser(base)
    groups = group_items(build_items(cfg, base.tokenizer), cfg.batch_size)
    pad_id = base.tokenizer.pad_token_id
    with tempfile.TemporaryDirectory() as tmp:
        harvest_once(den, groups, cfg, pad_id, Path(tmp) / "warm")  # warm-up
        walls, bares = [], []
        for r in range(args.repeats):  # interleaved, so drift hits both alike
            den.calls = []
            wall, states, pairs = harvest_once(den, groups, cfg, pad_id, Path(tmp) / f"run{r}")
            calls = list(den.calls)
            walls.append(wall)
            bares.append(replay(base, calls, base.vocab_size - 1))
    w, b = statistics.median(walls), statistics.median(bares)
    perturbed = sum(1 for c in calls if not c[2])
    row = {"model": args.model, "task": args.task, "examples": args.examples, "states": states, "pairs": pairs,
           "forwards": len(calls), "perturbed_forwards": perturbed, "chunk_size": args.chunk_size,
           "batch_size": args.batch_size, "topk": args.topk, "harvest_s": w, "forwards_s": b, "ratio": w / b,
           "target": 1.3, "states_per_s": states / w, "pairs_per_s": pairs / w, "device": str(base.device),
           "threads": torch.get_num_threads(), "repeats": args.repeats}
    print(f"{'device':<8}{'states':>8}{'forwards':>10}{'harvest s':>11}{'forwards s':>12}{'ratio':>8}"
          f"{'states/s':>10}{'pairs/s':>10}")
    print(f"{row['device']:<8}{states:>8}{len(calls):>10}{w:>11.3f}{b:>12.3f}{w / b:>8.3f}"
          f"{states / w:>10.1f}{pairs / w:>10.0f}")
    print(f"target <= 1.3: {'met' if w / b <= 1.3 else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
