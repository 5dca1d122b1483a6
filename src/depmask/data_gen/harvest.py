"""Harvest one group of examples: decode their trajectories and record the kept states.

Plain torch around the shared loop; the Lightning `predict` wrapper (`depmask.train.harvest`)
calls `harvest_group` once per batch and writes what it returns. The harvest directory's
`harvest.json` (what was asked, the model's fingerprint) is made and checked here.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from depmask.data_gen.config import HarvestConfig
from depmask.data_gen.dataset import harvest_info
from depmask.data_gen.prompts import PromptItem, choose_steps, parse_policy
from depmask.data_gen.recorder import Recorder
from depmask.data_gen.schema import SCHEMA_VERSION, StateRecord
from depmask.data_gen.shards import HARVEST_JSON, write_json_atomic
from depmask.decoding import batch_seed, build_policy, generate
from depmask.decoding.influence import chunk_for_budget
from depmask.revisions import changes_since


@dataclass
class GroupResult:
    example_ids: list[str]
    records: list[StateRecord] = field(default_factory=list)
    pairs: int = 0
    forwards: int = 0  # batched forward calls (trajectory + probes)
    probe_forwards: int = 0


# how each example's kept states are chosen (`prompts.choose_steps`), recorded in harvest.json: a
# harvest chosen otherwise is not resumed with this code
STATE_CHOICE = "among the trajectory's forwards"


def harvest_group(denoiser, items: list[PromptItem], cfg: HarvestConfig, pad_id: int) -> GroupResult:
    """Decode `items` (one group: same task, lengths and policy) and return their kept states."""
    first = items[0]
    name, knobs = parse_policy(first.policy)
    policy = build_policy(name, **knobs)
    b, g = len(items), first.gen_length
    prompts = [it.prompt_ids for it in items]

    def sampler():  # the same seed for both passes: the same trajectory
        if cfg.temperature == 0 and not policy.uses_generator:
            return None
        return torch.Generator(denoiser.device).manual_seed(batch_seed(cfg.seed, first.example_id))

    keep, plain_forwards = torch.ones(b, g, dtype=torch.bool), 0
    if cfg.states_per_example is not None:  # states among the forwards each trajectory takes: decode it first
        plain = generate(denoiser, prompts, policy, gen_length=g, block_length=first.block_length, steps=g,
                         temperature=cfg.temperature, generator=sampler(), pad_id=pad_id)
        keep[:], plain_forwards = False, plain.forwards
        for r, it in enumerate(items):
            # among its decoding steps: a probing policy's (`oracle`) nfe counts its probe forwards too,
            # and the recorder counts one step per selection (an index past them: IndexError, or lost)
            steps = int(plain.nfe[r]) - (int(plain.probe_nfe[r]) if plain.probe_nfe is not None else 0)
            keep[r, choose_steps(cfg.seed, it.example_id, steps, cfg.states_per_example)] = True
    width = max(len(it.prompt_ids) for it in items)
    # a state's masked positions are those of its block (`StepState.mask`): at most a block compared at once
    chunk = cfg.chunk_size or chunk_for_budget(cfg.memory_budget_mb << 20, width + g, denoiser.vocab_size,
                                               positions=first.block_length)
    meta = [{"example_id": it.example_id, "task": it.task, "policy": it.policy,
             "fingerprint": denoiser.fingerprint, "prompt_length": len(it.prompt_ids)} for it in items]
    recorder = Recorder(policy, keep, [width - len(it.prompt_ids) for it in items], meta,
                        mask_id=denoiser.mask_id, topk=cfg.topk, chunk_size=chunk)
    res = generate(denoiser, prompts, recorder, gen_length=g, block_length=first.block_length, steps=g,
                   temperature=cfg.temperature, generator=sampler(), pad_id=pad_id)
    return GroupResult(example_ids=[it.example_id for it in items], records=recorder.records,
                       pairs=recorder.pairs, forwards=plain_forwards + res.forwards,
                       probe_forwards=recorder.probe_forwards)


def items_digest(items: list[PromptItem]) -> str:
    """sha256 of what each example decodes — its id, prompt tokens, policy and lengths — in id
    order: an edited prompts file or other task arguments keep the ids but change this."""
    rows = sorted((it.example_id, it.prompt_ids, it.policy, it.gen_length, it.block_length) for it in items)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


# recorded since 2026-11-30: a harvest.json written before has none, and is not checked on them
_LATER_KEYS = ("items_sha256", "precision")
# Bumped when a fix changes what the same settings harvest; another revision resumes with a warning.
HARVEST_REVISION = "2026-11-30.2"
_REVISION_NOTES = {  # in order (`changes_since`)
    "2026-11-30": "captured attention leaves the model's output as uncaptured (in bf16 the captured forward "
                  "had moved the baseline against its uncaptured probes, by up to 0.02 TV), and left-padded rows "
                  "of models that take `position_ids` are numbered from their first token",
    "2026-11-30.2": "the padding of RoBERTa-family models holds their pad id (they number positions from it), "
                    "so their left-padded rows read as alone (rows padded with the tokenizer's pad id, as the "
                    "harvest pads them, already did)",
}


def prepare_output(cfg: HarvestConfig, fingerprint: str, hidden_size: int, vocab_size: int,
                   example_ids: list[str], items_sha256: str | None = None, precision: str | None = None,
                   write: bool = True, device: str | None = None) -> dict:
    """Create `harvest.json`, or check that an existing one asked for the same data; returns its
    contents (the existing file's on a resume).

    `items_sha256`: `items_digest` of the examples (the ids alone, `examples_sha256`, do not change
    when a prompts file is edited); `precision`: the Lightning precision the forwards run under
    (`bf16-mixed` changes the influences); `write`: False on every rank but the first of a
    distributed harvest (the ranks' temporary files are named by pid, which two hosts can share);
    `device`: the forwards' device type ("cpu", "cuda"), recorded; a resume on another one is
    warned about, not refused (its examples' states are drawn from that device's generator, and
    the float rounding differs: valid data, not the single-device run's)."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    ids_hash = hashlib.sha256("\n".join(sorted(example_ids)).encode()).hexdigest()
    spec = {"schema_version": SCHEMA_VERSION, "fingerprint": fingerprint, "hidden_size": hidden_size,
            "vocab_size": vocab_size, "model": cfg.model, "config": cfg.identity(),
            "examples": len(example_ids), "examples_sha256": ids_hash, "state_choice": STATE_CHOICE}
    spec.update({k: v for k, v in (("items_sha256", items_sha256), ("precision", precision)) if v is not None})
    spec["revision"] = HARVEST_REVISION
    if device is not None:
        spec["device"] = device
    path = out / HARVEST_JSON
    if path.is_file():
        old = harvest_info(out)  # a damaged record is a HarvestError naming it
        if old.get("revision") != HARVEST_REVISION:
            warnings.warn(f"{path}: harvested by depmask revision {old.get('revision') or 'before 2026-11-30'}, this "
                          f"is {HARVEST_REVISION}; its states are kept as they are, though since then "
                          f"{changes_since(old.get('revision'), _REVISION_NOTES)}. "
                          "Delete the directory to harvest it again", stacklevel=2)
        diffs = [f"{k}: {old.get(k)!r} → {spec[k]!r}" for k in ("schema_version", "fingerprint", "hidden_size", "examples_sha256")
                 if old.get(k) != spec[k]]
        diffs += [f"{k}: {old[k]!r} → {spec[k]!r}" for k in _LATER_KEYS if k in old and k in spec and old[k] != spec[k]]
        if cfg.states_per_example is not None and old.get("state_choice") != STATE_CHOICE:
            diffs.append(f"state_choice: {old.get('state_choice')!r} → {STATE_CHOICE!r} (its states were chosen "
                         "among `gen_length` forward indices, before 2026-11-30)")
        # empty task_kwargs are not recorded, so dropping them on resume is compared too; prompts_chat is
        # recorded since 2026-11-30 (off before)
        old_config = {"task_kwargs": {}, "prompts_chat": False, **old.get("config", {})}
        new_config = {"task_kwargs": {}, **spec["config"]}
        diffs += [f"config.{k}: {old_config.get(k)!r} → {v!r}" for k, v in new_config.items() if old_config.get(k) != v]
        if device is not None and old.get("device", device) != device:
            warnings.warn(f"{path}: harvested on {old['device']} so far, resumed on {device}: the remaining examples' "
                          "states are drawn and computed there (another run than a single-device one)", stacklevel=2)
        if diffs:
            raise ValueError(
                f"{path} belongs to a different harvest; resuming would mix data ({'; '.join(diffs)}). "
                "Use another `--output`, or delete the directory to start over."
            )
        return old
    if write:
        write_json_atomic(path, spec)
    return spec
