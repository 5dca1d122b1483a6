"""`depmask harvest --config configs/harvest/tiny-tasks.yaml [--trainer.devices 2 ...]`.

The flags are `HarvestConfig`'s fields plus every `lightning.Trainer` argument under `--trainer.`
(jsonargparse, the same YAML dialect as the other commands); `--print_config` prints the resolved
config, which is also saved as `harvest.yaml` in the output directory. Running the same command
again resumes an interrupted harvest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch import Trainer

from depmask.data_gen import HarvestConfig

TRAINER_DEFAULTS = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "accelerator": "auto", "devices": 1}


def harvest_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="depmask harvest", description=__doc__.splitlines()[0],
                            default_config_files=[])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config (configs/harvest/*.yaml)")
    parser.add_class_arguments(HarvestConfig, "harvest", as_group=True)
    parser.add_class_arguments(Trainer, "trainer", as_group=True,
                               skip={"callbacks", "profiler", "plugins", "default_root_dir"})
    parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    return parser


def harvest_cli(args: Sequence[str] | None = None) -> dict:
    from depmask.train.harvest import run_harvest

    parser = harvest_parser()
    ns = parser.parse_args(list(args) if args is not None else None)
    cfg_ns = ns.clone()
    del cfg_ns.config
    init = parser.instantiate_classes(ns)
    cfg: HarvestConfig = init.harvest
    out = Path(cfg.output)
    trainer_kwargs = {k: v for k, v in vars(ns.trainer).items()}
    record = parser.dump(cfg_ns, skip_none=False).encode()
    summary = run_harvest(cfg, trainer_kwargs, record=record)
    if summary.get("total_rows") is not None:
        _print_summary(summary, out)
    return summary


def _print_summary(s: dict, out: Path) -> None:
    who = "harvest" if s.get("world_size", 1) == 1 else f"harvest (rank 0 of {s['world_size']})"
    if s["states"] is None:  # counted in child processes, which report nothing back
        print(f"harvest: the ranks ran in child processes (a spawning strategy), whose figures are not "
              f"collected; {s['skipped_examples']} examples already done")
    else:
        print(
            f"{who}: {s['states']} states from {s['examples']} examples in {s['seconds']:.1f} s "
            f"({s['states_per_s']:.1f} states/s, {s['pairs_per_s']:.0f} influence pairs/s; "
            f"{s['forwards']} forwards, {s['probe_forwards']} of them perturbed); "
            f"{s['skipped_examples']} examples already done"
        )
    print(f"harvest: {out} holds {s['total_rows']} states of {s['total_examples']}/{s['expected_examples']} "
          f"examples in {s['shards']} shards")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()}))
