"""`HarvestConfig`: what a harvest is asked to produce (its signature is the YAML schema).

Fields split into two kinds. *Identity* fields decide which states exist and what they contain;
a harvest directory remembers them in `harvest.json`, and resuming with different values is
refused. The others (`output`, `chunk_size`, `memory_budget_mb`, `num_workers`) change how fast
the same data is produced, never what it is. This module validates; it runs nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

IDENTITY_FIELDS = (
    "tasks", "split", "examples_per_task", "prompts_file", "prompts_chat", "seed", "policies",
    "states_per_example", "gen_length", "block_length", "temperature", "topk", "batch_size",
    "dtype", "capture_layers", "task_kwargs",
)


@dataclass
class HarvestConfig:
    """Harvest settings.

    Args:
        model: local directory of the frozen MDLM (anything `HFDenoiser.from_pretrained` loads).
        output: harvest directory (created; an interrupted harvest there is resumed).
        tasks: task names: synthetic tasks (`depmask tasks show NAME`) or local-file benchmarks
            (`gsm8k`, `math500`, `humaneval`, `mbpp`: their prompt format and chat template, the
            same prompts `depmask eval decode` decodes); ignored when `prompts_file` is set.
        task_kwargs: per-task constructor arguments, e.g. `{gsm8k: {path: /data/gsm8k, shots: 0}}`
            (a benchmark's data `path`, `shots`, `chat`, `gen_length`, `block_length`).
        split: which split of each task to draw examples from (`train` for GSM8K's 7473 problems).
        examples_per_task: examples drawn from each task (with `prompts_file`: unused, as `split`
            is; every row of the file is an example).
        prompts_file: a `.jsonl` file (one JSON object per line) or a `datasets.save_to_disk`
            directory of one split, with a `prompt` column (text, tokenized with the model's
            tokenizer) and optionally a unique `id`; checked row by row before the model loads.
        prompts_chat: wrap each `prompts_file` text as a user turn in the tokenizer's chat template,
            the assistant turn opened (what Instruct models and `depmask decode` use); off: the
            text is encoded as written, no special tokens added.
        seed: seeds the examples, the choice of states and any sampling (a benchmark takes its
            first problems in file order at seed 0, as `depmask eval decode` does).
        policies: trajectory policies, each a preset name with optional knobs,
            e.g. `threshold:threshold=0.7`; with several, each example gets one (by its id's hash).
        states_per_example: states kept per example, chosen at random among the forwards its
            trajectory takes (all steps when None; `prompts.choose_steps`).
        gen_length: answer canvas; default the task's answer length, a benchmark's `gen_length`
            (required with `prompts_file`).
        block_length: semi-autoregressive block; default a benchmark's `block_length`, else
            `gen_length` (one block).
        temperature: trajectory sampling temperature (0 = argmax).
        topk: 1 = influence at the candidate value; k > 1 = expectation over the top-k values.
        batch_size: examples per batch (and per shard).
        chunk_size: perturbed copies per forward; default from `memory_budget_mb`.
        memory_budget_mb: logits memory one perturbed forward may use when `chunk_size` is unset.
        dtype: model dtype (`float32`, `bfloat16`, ...); default the checkpoint's.
        capture_layers: attention capture layers; default the last quarter.
        num_workers: DataLoader workers.
    """

    model: str = "models/tiny-tasks"
    output: str = "outputs/harvest/tiny-tasks"
    tasks: list[str] = field(default_factory=lambda: ["sudoku4", "permutation"])
    split: str = "train"
    examples_per_task: int = 100
    prompts_file: str | None = None
    prompts_chat: bool = False
    task_kwargs: dict[str, dict] = field(default_factory=dict)
    seed: int = 0
    policies: list[str] = field(default_factory=lambda: ["low_confidence"])
    states_per_example: int | None = 4
    gen_length: int | None = None
    block_length: int | None = None
    temperature: float = 0.0
    topk: int = 1
    batch_size: int = 32
    chunk_size: int | None = None
    memory_budget_mb: int = 1024
    dtype: str | None = None
    capture_layers: list[int] | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        from depmask.paths import output_dir

        # `~` in a YAML value reaches here unexpanded (it made a directory named `~`); only `~`: the
        # spelling is otherwise kept, as a harvest records `prompts_file` and compares it on resume
        self.model = os.path.expanduser(self.model)
        output_dir("output", self.output)
        self.output = os.path.expanduser(self.output)
        if self.prompts_file is not None:
            self.prompts_file = os.path.expanduser(self.prompts_file)
        checks = [
            ("examples_per_task", self.examples_per_task >= 1, ">= 1"),
            ("topk", self.topk >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("temperature", self.temperature >= 0, ">= 0"),
            ("memory_budget_mb", self.memory_budget_mb >= 1, ">= 1"),
            ("states_per_example", self.states_per_example is None or self.states_per_example >= 1, ">= 1 or None"),
            ("chunk_size", self.chunk_size is None or self.chunk_size >= 1, ">= 1 or None"),
            ("gen_length", self.gen_length is None or self.gen_length >= 1, ">= 1 or None (the task's answer length)"),
            ("block_length", self.block_length is None or self.block_length >= 1, ">= 1 or None (one block)"),
            ("num_workers", self.num_workers >= 0, ">= 0 (0 = load in the main process)"),
            ("policies", len(self.policies) >= 1, "at least one policy"),
            ("tasks", self.prompts_file is not None or len(self.tasks) >= 1, "at least one task (or a `prompts_file`)"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"`{name}` ({getattr(self, name)!r}) must be {expected}")
        self._check_policies()
        if not isinstance(self.task_kwargs, dict) or not all(isinstance(v, dict) for v in self.task_kwargs.values()):
            raise ValueError(f"`task_kwargs` ({self.task_kwargs!r}) must map task names to dicts of arguments")
        stray = sorted(set(self.task_kwargs) - set(self.tasks))
        if stray and self.prompts_file is None:
            raise ValueError(f"`task_kwargs` names {stray}, which are not in `tasks` ({self.tasks})")
        if self.prompts_chat and self.prompts_file is None:  # tasks take their own format (`task_kwargs`' chat)
            raise ValueError("`prompts_chat` applies to a `prompts_file`'s texts; a benchmark task takes its chat "
                             "template from `task_kwargs` (`{gsm8k: {chat: true}}`)")
        if self.prompts_file is not None and self.gen_length is None:
            raise ValueError("`gen_length` must be set when `prompts_file` is given (there is no task answer length)")

    def _check_policies(self) -> None:
        """Each policy spec names a preset and knobs it takes: a typo fails here, not after the
        groups before it were harvested."""
        from depmask.data_gen.prompts import parse_policy
        from depmask.decoding.policies import check_policy

        seen: dict = {}
        for spec in self.policies:
            try:
                name, knobs = parse_policy(spec)
            except ValueError as err:
                raise ValueError(f"`policies` entry {spec!r}: {err}") from err
            # the policy itself, not its spelling: `threshold` and `threshold:threshold=0.9` (its
            # default), `low_confidence` and `LowConfidence`, are one policy
            built = check_policy(name, knobs, f"`policies` entry {spec!r}")
            key = (type(built).__name__, json.dumps(built.knobs(), sort_keys=True, default=str))
            if key in seen:  # examples are spread over the entries: a repeat doubled its share silently
                raise ValueError(f"`policies` entries {seen[key]!r} and {spec!r} are the same policy; each example "
                                 "follows one entry, so a repeat changes the mix: list it once")
            seen[key] = spec

    def identity(self) -> dict:
        """The fields that decide the harvested data (compared on resume). Empty `task_kwargs`
        are left out, so harvests made before the field existed still resume."""
        d = asdict(self)
        return {k: d[k] for k in IDENTITY_FIELDS if k != "task_kwargs" or d[k]}
