"""The decoding benchmark: tasks × policies × knob sweeps through the shared loop.

Every run (task, policy preset, knob values) decodes the same items in batches, grades them,
appends one JSONL row per item (`items/<task>/<run>.jsonl`: id, completion, correct, NFE, probe
NFE, TPF, AFP, Kendall τ, commit steps, seconds) and is summarised into one row (`summary.py`).
Re-running skips items already written. The per-item file is the source of truth: summaries,
`summary.json` and the frontier plot are recomputed from it. It does not train or harvest.
"""

from __future__ import annotations

import itertools
import json
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from depmask.data_gen.shards import write_atomic
from depmask.decoding import (
    Policy,
    batch_seed,
    build_policy,
    check_lengths,
    check_policy,
    compile_mode,
    compile_mode_for,
    generate,
)
from depmask.eval.draws import check_items, draw_digest, draw_items, item_digest
from depmask.eval.headline_ci import ROLE_PRESETS
from depmask.eval.items import (
    append_items,
    check_provenance,
    done_ids,
    plain_value,
    read_items,
    run_lock,
    run_provenance,
    run_slug,
    unique_items,
)
from depmask.eval.regrade import regrade
from depmask.eval.summary import summarize
from depmask.tasks.adapter import TaskAdapter


@dataclass
class PolicySweep:
    """A policy preset, fixed knobs, and a grid of knob values to sweep.

    Example: `{name: threshold, sweep: {threshold: [0.5, 0.7, 0.9]}}` is three runs;
    `{name: demask, knobs: {head: models/tiny-tasks-head}, sweep: {epsilon: [0.05, 0.2]}}` two.
    `label` is the name its runs carry in tables, the headline and plots (default: `name`), so
    that several `guided` crossings stay apart: `{name: guided, label: head-conflict, knobs: {units:
    cluster, rule: conflict, scorer: head, head: DIR}, sweep: {threshold: [0.7, 0.9]}}`.
    """

    name: str
    knobs: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    label: str | None = None

    def __post_init__(self):
        if self.label is not None:
            from depmask.decoding.policies import POLICIES

            if not self.label or (self.label in POLICIES and self.label != self.name):
                raise ValueError(f"policy {self.name!r}: `label` ({self.label!r}) must be a non-empty name that is not "
                                 f"another preset's ({sorted(POLICIES)}), or its results would mix with that preset's")
            if self.label != self.name and self.name in ROLE_PRESETS:
                raise ValueError(f"policy {self.name!r}: `label` ({self.label!r}) is not allowed on the reference, "
                                 f"the oracle or today's decoders ({sorted(ROLE_PRESETS)}): the headline and the reports "
                                 "find them by name; put every value in one sweep of the preset instead")

    @property
    def shown(self) -> str:
        """The name the runs carry in tables and the headline."""
        return self.label or self.name

    def expand(self) -> list[dict[str, Any]]:
        keys = list(self.sweep)
        for k in keys:
            if not isinstance(self.sweep[k], list) or not self.sweep[k]:
                raise ValueError(f"policy {self.name!r}: `sweep.{k}` ({self.sweep[k]!r}) must be a non-empty list")
        combos = itertools.product(*(self.sweep[k] for k in keys)) if keys else [()]
        # swept knobs first (tables show the knobs in this order, truncated), then the fixed ones
        runs = [dict(zip(keys, values)) for values in combos]
        return [{**run, **{k: v for k, v in self.knobs.items() if k not in run}} for run in runs]


def _row_items(res, b: int, committed, seconds: float, examples, completions, correct, grader: str) -> list[dict]:
    tpf, afp, tau = res.tpf().tolist(), res.afp().tolist(), res.kendall_tau().tolist()
    probe = res.probe_nfe.tolist() if res.probe_nfe is not None else [0] * b
    return [{"id": ex.id, "item": item_digest(ex), "completion": comp, "correct": bool(ok), "grader": grader, "nfe": int(res.nfe[i]),
             "probe_nfe": int(probe[i]),
             "tpf": tpf[i], "afp": afp[i] if afp[i] == afp[i] else None,
             "kendall_tau": tau[i] if tau[i] == tau[i] else None, "committed": int(committed[i]),
             "commit_step": res.commit_step[i].tolist(), "seconds": seconds / b}
            for i, (ex, comp, ok) in enumerate(zip(examples, completions, correct))]


def denoiser_settings(denoiser) -> dict:
    """How `denoiser` turns a canvas into logits, beyond its weights (the fingerprint): parameter
    dtype, device type, mask and EOS ids, the logit shift and the attention capture layers (None:
    the default, the last quarter). Recorded with each run (`run_provenance`)."""
    dtype = getattr(denoiser, "dtype", None)
    return {"dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
            "device": torch.device(getattr(denoiser, "device", "cpu")).type,
            "mask_id": getattr(denoiser, "mask_id", None),
            "eos_ids": list(getattr(denoiser, "eos_ids", ()) or ()),
            "logits_shift": getattr(denoiser, "logits_shift", None),
            "capture_layers": getattr(denoiser, "capture_layers", None)}


def run_one(denoiser, adapter: TaskAdapter, policy_name: str, knobs: dict, examples, items_path: Path, *,
            batch_size: int, temperature: float, gen_length: int, block_length: int, steps: int | None,
            seed: int, bar=None, keep: list | None = None, label: str | None = None,
            compile_select: bool | str | None = None) -> dict:
    """Decode the items of one run that are not in `items_path` yet; returns its summary row (its
    `policy` is `label`, default `policy_name`).
    `keep`: a list that receives the run's graded items (those of `examples`), for the bootstrap.
    `compile_select`: compile the policy's step where it can be ("jit" / "aot"; `compile_mode_for`:
    the oracle, and with "aot" policies that declare no `state_fields`, stay eager). The mode
    used goes into the provenance record and the row (`compile_select`). Before the timed batches
    the first batch is decoded once, untimed and discarded, so that `seconds` and `tokens_per_s`
    leave the compilation out."""
    tokenizer = denoiser.tokenizer
    policy = build_policy(policy_name, **knobs)
    mode = compile_mode_for(policy, compile_select)
    decoding = {"temperature": temperature, "gen_length": gen_length, "block_length": block_length,
                "steps": steps or gen_length,
                "task_arguments": json.loads(json.dumps(adapter.arguments, sort_keys=True, default=str))}
    seeded = temperature > 0 or policy.uses_generator  # a generator the decode draws from
    if seeded:  # the sampling seed: a benchmark's item ids do not name it (a synthetic task's do)
        decoding["seed"] = seed
    provenance = run_provenance(getattr(denoiser, "fingerprint", None), knobs, mode, decoding=decoding,
                                denoiser=denoiser_settings(denoiser))
    pad_id = getattr(tokenizer, "pad_token_id", None)

    def decode(chunk):
        prompts = [adapter.prompt_ids(ex, tokenizer) for ex in chunk]
        # `random` draws its positions at temperature 0 too: unseeded, it drew from torch's global generator
        gen = torch.Generator(denoiser.device).manual_seed(batch_seed(seed, chunk[0].id)) if seeded else None
        return generate(denoiser, prompts, policy, gen_length=gen_length, block_length=block_length,
                        steps=steps or gen_length, temperature=temperature, generator=gen, pad_id=pad_id,
                        compile_select=mode or False)

    def waiting():
        if bar is not None:
            bar.set_postfix_str(f"{bar.postfix}, waiting: another process decodes this run")

    with run_lock(items_path, on_wait=waiting):  # read after the lock: another process's items count
        rows = read_items(items_path)
        check_provenance(items_path, provenance, bool(rows))
        check_items(items_path, rows, examples)
        regrade(items_path, rows, examples, adapter)  # verdicts of another grader: judged again
        have = done_ids(rows)
        todo = [ex for ex in examples if ex.id not in have]
        if not adapter.synthetic:  # prompts of similar length share a batch: less left padding (a
            # 1,000-token prompt among 100–300-token ones made 58 % of every forward padding)
            todo.sort(key=lambda ex: len(adapter.prompt_ids(ex, tokenizer)))
        if bar is not None:
            bar.update(len(examples) - len(todo))
        if mode is not None and todo:
            shown = bar.postfix if bar is not None else None
            if bar is not None:
                bar.set_postfix_str(f"{shown}, compiling ({mode})" if shown else f"compiling ({mode})")
            decode(todo[:batch_size])  # compiles (or loads `aot` libraries) outside the timed batches
            if bar is not None:
                bar.set_postfix_str(shown or "")
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            t0 = time.perf_counter()
            res = decode(chunk)
            seconds = time.perf_counter() - t0
            completions = [adapter.completion(r, tokenizer, denoiser.eos_ids) for r in res.generated.tolist()]
            correct = adapter.grade(chunk, completions)
            new = _row_items(res, len(chunk), res.committed.tolist(), seconds, chunk, completions, correct,
                             adapter.grader)
            append_items(items_path, new)
            rows += new
            if bar is not None:
                bar.update(len(chunk))
    mine = unique_items(rows, {ex.id for ex in examples})
    if keep is not None:
        keep.append(mine)
    row = summarize(adapter.name, label or policy_name, _plain(knobs), mine)
    if mode is not None:
        row["compile_select"] = mode
    return row


def _plain(knobs: dict) -> dict:
    """The knobs a summary row shows: scalars as plain Python values (a NumPy scalar from a
    Python-built sweep, a `Path` head kept as text, not dropped: the row's run key needs them)."""
    out = {}
    for k, v in knobs.items():
        v = plain_value(v)
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
    return out




def check_counts(n: int | None, batch_size: int) -> None:
    """`n` (items per task; None: all of a benchmark's split) and `batch_size` must be counts >= 1:
    with no items there is nothing to decode, grade or resample."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"`n` ({n!r}) must be an int >= 1 (items per task), or None for all of a benchmark's split")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` ({batch_size!r}) must be an int >= 1 (prompts per decode batch)")


def listed(name: str, value: list | None, default: list, unset: str) -> list:
    """`value` as a list, `default` when it is None; an empty list is refused by name (it is not
    "unset": it used to run the defaults, or nothing)."""
    if value is None:
        return list(default)
    if not value:
        raise ValueError(f"`{name}` is empty: give at least one, or leave it unset for {unset}")
    return list(value)


def check_decoding(temperature: float, gen_length: int | None, block_length: int | None, steps: int | None,
                   tasks: bool = True) -> None:
    """The decoding settings shared by every run, checked before anything loads: 0 is a value, not
    "unset" (it used to fall back to the task's length silently). `tasks`: unset lengths are the
    task's (eval); else gen_length has no default and an unset block is gen_length (`decode`)."""
    finite = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool) and 0 <= temperature < float("inf")
    if not finite:
        raise ValueError(f"`temperature` ({temperature!r}) must be a finite number >= 0 (0: argmax)")
    for name, value, unset in (("gen_length", gen_length, "the task's answer length" if tasks else None),
                               ("block_length", block_length, "the task's block" if tasks else "gen_length"),
                               ("steps", steps, "gen_length, one token per step")):
        if unset is None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` ({value!r}) must be an int >= 1")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` ({value!r}) must be an int >= 1, or None for {unset}")


def task_lengths(adapter: TaskAdapter, gen_length: int | None, block_length: int | None,
                 steps: int | None) -> tuple[int, int]:
    """A task's (gen_length, block_length): the settings given, else the task's own (its block
    also under another gen_length), checked (ValueError naming the task)."""
    adapter.check_length_arguments(gen_length, block_length)
    g = gen_length or adapter.gen_length
    blk = block_length or adapter.block_length
    adapter.check_gen_length(g)
    try:
        check_lengths(g, blk, steps or g)
    except ValueError as err:
        hint = "" if block_length else f" (the task's block; give --block_length for gen_length {g})"
        raise ValueError(f"task {adapter.name!r}: {err}{hint}") from None
    return g, blk


def check_tasks(tasks: list[str], task_kwargs: dict[str, dict] | None, gen_length: int | None = None,
                block_length: int | None = None, steps: int | None = None, split: str | None = None,
                n: int | None = None, seed: int = 0) -> None:
    """Every task built with its arguments and its lengths checked, no task named twice, and no
    `task_kwargs` for a task that is not run (a misspelled name was silently ignored), before a
    model loads. With `split`, the draw is made too: a benchmark's missing data file, a split the
    task lacks or a generated task without `n` are named before an 8B model loads, not after."""
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:
        raise ValueError(f"`tasks` ({tasks}) names {twice} more than once")
    stray = sorted(set(task_kwargs or {}) - set(tasks))
    if stray:
        raise ValueError(f"`task_kwargs` names {stray}, which are not in `tasks` ({tasks})")
    for name in tasks:
        adapter = TaskAdapter.build(name, **(task_kwargs or {}).get(name, {}))
        task_lengths(adapter, gen_length, block_length, steps)
        if split is not None:
            drawn = adapter.examples(split, n, seed)
            if drawn and not adapter.synthetic:  # its prompt too: MBPP's few-shot exemplars are another split
                adapter.task.prompt_text(drawn[0], None, chat=False)


def check_seed(name: str, value) -> None:
    """A seed numpy's and Lightning's generators take: an int in [0, 2**32 - 1] (a negative one
    failed in the bootstrap after every run had decoded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**32:
        raise ValueError(f"`{name}` ({value!r}) must be an int in [0, 2**32 - 1]")


def check_policies(policies: list[PolicySweep], defaults: dict[str, dict] | None = None) -> list[Policy]:
    """Build every run of every sweep once, so that a bad preset name or knob fails before
    anything loads or decodes, naming the sweep and the run (not after the runs before it).
    `defaults`: per preset name, knobs a command adds to runs that do not set them. Returns the
    policies built, run by run."""
    seen: dict[str, str] = {}
    built = []
    for sweep in policies:
        for knobs in sweep.expand():
            slug = run_slug(sweep.name, knobs)  # the run's results file: two runs must not share it
            if slug in seen:
                raise ValueError(f"policy sweep {sweep.shown!r}, run {_plain(knobs)}: the same run as one of sweep "
                                 f"{seen[slug]!r} (same preset and knobs, so the same results file); "
                                 "drop one of them")
            seen[slug] = sweep.shown
            knobs = {**(defaults or {}).get(sweep.name, {}), **knobs}
            built.append(check_policy(sweep.name, knobs, f"policy sweep {sweep.shown!r}, run {_plain(knobs)}"))
    return built


def run_decode_eval(denoiser, tasks: list[str], policies: list[PolicySweep], output: str | Path, *,
                    n: int | None = 200, split: str = "test", seed: int = 0, batch_size: int = 64,
                    temperature: float = 0.0, gen_length: int | None = None, block_length: int | None = None,
                    steps: int | None = None, task_kwargs: dict[str, dict] | None = None,
                    items: list | None = None, exclude: dict[str, set[str]] | None = None,
                    compile_select: bool | str | None = None) -> list[dict]:
    """Every task × every expanded policy run; returns the summary rows (and writes items).
    `items`: a list that receives each row's graded items, in the order of the rows.
    `exclude`: per task, prompts to leave out of the draw (`task_prompts` of another draw), so
    that held-out selection items never repeat an evaluation item.
    `compile_select`: compiled selection for every run whose policy can take it (`run_one`)."""
    compile_mode(compile_select)  # a bad value fails before anything decodes
    check_counts(n, batch_size)
    check_decoding(temperature, gen_length, block_length, steps)
    check_policies(policies)
    out = Path(output).expanduser()
    plan = []
    for task_name in tasks:
        adapter = TaskAdapter.build(task_name, **(task_kwargs or {}).get(task_name, {}))
        examples = draw_items(adapter, split, n, seed, exclude)
        g, blk = task_lengths(adapter, gen_length, block_length, steps)
        for sweep in policies:
            for knobs in sweep.expand():
                plan.append((adapter, examples, sweep, knobs, g, blk))
    rows = []
    total = sum(len(p[1]) for p in plan)
    index = {}
    with tqdm(total=total, desc="eval decode", unit="item", dynamic_ncols=True) as bar:
        for adapter, examples, sweep, knobs, g, blk in plan:
            slug = run_slug(sweep.name, knobs)
            bar.set_postfix(task=adapter.name, policy=sweep.shown)
            path = out / "items" / adapter.name / f"{slug}.jsonl"
            rows.append(run_one(denoiser, adapter, sweep.name, knobs, examples, path, batch_size=batch_size,
                                temperature=temperature, gen_length=g, block_length=blk, steps=steps,
                                seed=seed, bar=bar, keep=items, label=sweep.label,
                                compile_select=compile_select))
            index[f"{adapter.name}/{slug}"] = {"task": adapter.name, "policy": sweep.name, "label": sweep.shown,
                                               "knobs": {k: plain_value(v) for k, v in knobs.items()}, "gen_length": g, "block_length": blk,
                                               # the items its summary row is over (this draw, not every
                                               # item its results file holds from earlier draws)
                                               "items": len(examples), "items_digest": draw_digest(examples)}
    write_atomic(out / "runs.json", json.dumps(index, indent=2, default=str).encode())
    return rows
