"""Harvest work items: prompts from tasks or a prompt file, the policy of each, its kept steps,
grouped into batches that decode together.

A group holds examples with the same answer length, block length and trajectory policy, at most
`batch_size` of them; the groups and their order depend only on the config, so a resumed or
distributed harvest sees the same groups. This module reads prompts and makes plans; it does not
decode.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from depmask.data_gen.config import HarvestConfig
from depmask.stable_hash import stable_int
from depmask.tasks.chat import encode_prompt


@dataclass
class PromptItem:
    example_id: str
    task: str
    prompt_ids: list[int]
    policy: str  # a policy spec, `name[:knob=value,...]`
    gen_length: int
    block_length: int


def parse_policy(spec: str) -> tuple[str, dict]:
    """`"threshold:threshold=0.7,x=1"` → ("threshold", {"threshold": 0.7, "x": 1})."""
    name, _, rest = spec.partition(":")
    knobs: dict = {}
    # a value cannot hold a comma (no quoting); blank parts (`a=1, ` or `a=1,,b=2`) are skipped
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"policy spec {spec!r}: knob {part!r} must look like `name=value` (a value "
                             "cannot hold a comma)")
        if key.strip() in knobs:  # the last one won, while the records' `policy` named both
            raise ValueError(f"policy spec {spec!r} gives knob {key.strip()!r} twice")
        try:
            knobs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:  # text: stripped as a number is (`head= runs/h` is `runs/h`)
            knobs[key.strip()] = value.strip()
    return name.strip(), knobs


def read_prompt_file(path: str) -> list[dict]:
    """The rows of a prompts file (JSONL, or a `datasets.save_to_disk` directory of one split), checked."""
    p = Path(path)
    if p.is_dir():
        from datasets import load_from_disk

        loaded = load_from_disk(str(p))
        if not hasattr(loaded, "column_names") or isinstance(loaded.column_names, dict):  # a DatasetDict
            raise ValueError(f"`prompts_file` ({path}) is a dataset with splits {sorted(loaded)}; give one "
                             f"split's directory (e.g. {p / sorted(loaded)[0]})")
        rows, where = list(loaded), None  # rows: `check_prompt_rows` numbers them
    elif p.is_file():
        rows, where = [], []
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"`prompts_file` ({path}) is not UTF-8 text ({e}); it holds UTF-8 JSON lines") from None
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{p}: line {n} is not JSON ({e}); a prompts file holds one JSON "
                                     "object per line") from None
                where.append(f"line {n}")
    else:
        raise FileNotFoundError(f"`prompts_file` ({path}) does not exist; expected a .jsonl file or a `datasets` directory")
    check_prompt_rows(path, rows, where)
    return rows


def check_prompt_rows(path: str, rows: list, where: list[str] | None = None) -> None:
    """Every row of a prompts file is an object with a text `prompt` (and, if it has one, an `id`
    no other row has), and there is at least one: named by file and line (`where`: each row's
    place, default `row N`), before the model loads."""
    if not rows:
        raise ValueError(f"`prompts_file` ({path}) holds no prompts")
    where = where or [f"row {n}" for n in range(1, len(rows) + 1)]
    ids: dict = {}
    for at, row in zip(where, rows):
        if not isinstance(row, dict):
            raise ValueError(f"`prompts_file` ({path}) {at} is a {type(row).__name__}, not an object with a "
                             "`prompt` (one JSON object per line, e.g. {\"id\": \"q1\", \"prompt\": \"...\"})")
        if not isinstance(row.get("prompt"), str) or not row["prompt"]:
            raise ValueError(f"`prompts_file` ({path}) {at}: `prompt` must be a non-empty string, got "
                             f"{row.get('prompt')!r}" + ("" if "prompt" in row else f" (fields: {sorted(map(str, row))})"))
        if "id" in row:
            if str(row["id"]) in ids:
                raise ValueError(f"`prompts_file` ({path}) {ids[str(row['id'])]} and {at} have the same id "
                                 f"{row['id']!r}; ids must be unique")
            ids[str(row["id"])] = at


def _task_items(name: str, cfg: HarvestConfig, tokenizer) -> list[PromptItem]:
    """A task's examples as `depmask eval decode` prompts them (`TaskAdapter`): a synthetic task's
    space-separated tokens on one block of its answer length, a benchmark's prompt format and
    chat template on its `gen_length` and `block_length`."""
    from depmask.tasks.adapter import TaskAdapter

    adapter = TaskAdapter.build(name, **cfg.task_kwargs.get(name, {}))
    gen, block = item_lengths(cfg, adapter)
    return [PromptItem(ex.id, name, adapter.prompt_ids(ex, tokenizer), "", gen, block)
            for ex in adapter.examples(cfg.split, cfg.examples_per_task, cfg.seed)]


def item_lengths(cfg: HarvestConfig, adapter=None) -> tuple[int, int]:
    """An example's (gen_length, block_length): the config's, else the task's (a synthetic task:
    one block of its answer; a benchmark: its own block); a `prompts_file`'s (no `adapter`): the
    config's gen_length in one block unless `block_length` is set."""
    if adapter is None:
        return cfg.gen_length, cfg.block_length or cfg.gen_length
    adapter.check_length_arguments(cfg.gen_length, cfg.block_length)
    gen = cfg.gen_length or adapter.gen_length
    adapter.check_gen_length(gen)
    return gen, cfg.block_length or (gen if adapter.synthetic else adapter.block_length) or gen


def build_items(cfg: HarvestConfig, tokenizer) -> list[PromptItem]:
    """Every example of the harvest, with its policy and kept steps, in a fixed order."""
    items: list[PromptItem] = []
    if cfg.prompts_file is not None:
        name = Path(cfg.prompts_file).stem
        for n, row in enumerate(read_prompt_file(cfg.prompts_file)):
            ids = encode_prompt(row["prompt"], tokenizer, chat=cfg.prompts_chat, option="prompts_chat")
            items.append(PromptItem(str(row.get("id", f"{name}:{n}")), name, ids, "", *item_lengths(cfg)))
    else:
        for task_name in cfg.tasks:
            items += _task_items(task_name, cfg, tokenizer)
    seen: set[str] = set()
    for it in items:
        if it.example_id in seen:
            raise ValueError(f"example id {it.example_id!r} appears twice; ids must be unique")
        seen.add(it.example_id)
        if it.gen_length % it.block_length:
            raise ValueError(f"`block_length` ({it.block_length}) must divide `gen_length` ({it.gen_length})")
        it.policy = cfg.policies[stable_int(cfg.seed, it.example_id, "policy") % len(cfg.policies)]
    return items


def choose_steps(seed: int, example_id: str, forwards: int, states: int) -> list[int]:
    """The forward indices whose states an example keeps: `states` of its trajectory's `forwards`
    (all of them when it has fewer), at random, the same for the same (seed, example, forwards).
    Chosen among the forwards the trajectory took: a parallel policy's trajectory is shorter than
    `gen_length`, and choosing among `gen_length` indices (as harvests did before 2026-11-30) kept
    about 1.3–1.6 of 6 states per sudoku4 `threshold` trajectory, and none for many."""
    rng = random.Random(stable_int(seed, example_id, "steps"))
    return sorted(rng.sample(range(forwards), min(states, forwards)))


def group_items(items: list[PromptItem], batch_size: int) -> list[list[PromptItem]]:
    """Batches of items that can decode together (same task, lengths and policy), in a fixed order."""
    by_key: dict[tuple, list[PromptItem]] = {}
    for it in items:
        by_key.setdefault((it.task, it.gen_length, it.block_length, it.policy), []).append(it)
    return [group[i : i + batch_size] for group in by_key.values() for i in range(0, len(group), batch_size)]
