"""`depmask eval decode --config configs/eval/tiny-tasks.yaml`: the decoding benchmark command.

Loads the model (`--model.path`, plus any `HFDenoiser.from_pretrained` setting; a file of those
settings works too: `--model configs/model/llada-8b-instruct.yaml`), runs tasks × policies × knob
sweeps (`depmask.eval.runner`), prints the summary table, and writes into `--output`:
`items/<task>/<run>.jsonl` (per item, the resume log), `summary.json` (one row per run),
`summary.csv`, `frontier.png` (x: the mean over items of TPF), `frontier-pooled.png` (x: all
tokens / all forwards), and — when `low_confidence` is among the policies — the headline
(`headline.json`: the TPF each policy reaches at one-token-per-step accuracy, under both
measures, at every accuracy window of `--windows`: 1 point by default) and its paired item
bootstrap (`headline_ci.json`: intervals of each policy's headline and of the share of the
oracle's headroom it closes, per window; `--bootstrap 0` skips it). With `--select_n N` every run
also decodes N held-out items per task (a disjoint draw of the same split, under `select/`), each
policy's knob is chosen on those and scored on the evaluation items (`headline_heldout.json`,
`eval/heldout.py`; with the bootstrap, intervals over both item sets in `headline_heldout_ci.json`,
`eval/heldout_ci.py`). With `--wandb true` the same table and plots go to wandb (offline unless
`WANDB_MODE` / an API key say otherwise).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from depmask.data_gen.shards import write_atomic
from depmask.decoding import compile_mode, compile_mode_for
from depmask.decoding.compile import check_compiler
from depmask.eval.draws import check_heldout, task_prompts
from depmask.eval.headline import MEASURES, headline_report
from depmask.eval.headline_ci import headline_intervals, intervals_table
from depmask.eval.heldout import heldout_headline, heldout_table
from depmask.eval.heldout_ci import heldout_intervals, heldout_intervals_table
from depmask.eval.plots import plot_frontier
from depmask.eval.runner import (
    PolicySweep,
    check_counts,
    check_decoding,
    check_policies,
    check_seed,
    check_tasks,
    listed,
    run_decode_eval,
)
from depmask.eval.summary import plain, table, to_json
from depmask.paths import output_dir

# written only by some invocations (a `low_confidence` run, `--bootstrap`, `--select_n`); one that
# does not write a file removes an earlier one's, which would describe other runs or items
OPTIONAL_OUTPUTS = ("headline.json", "headline_ci.json", "headline_heldout.json", "headline_heldout_ci.json",
                    "select/summary.json")


@dataclass
class ModelSpec:
    """Where and how to load the model (the arguments of `HFDenoiser.from_pretrained`)."""

    path: str = "models/tiny-tasks"
    mask_id: int | None = None
    device: str | None = None
    dtype: str | None = None
    logits_shift: bool | None = None
    capture_layers: list[int] | None = None
    trust_remote_code: bool = True
    attn_implementation: str | None = None


def _default_policies() -> list[PolicySweep]:
    return [PolicySweep("low_confidence"), PolicySweep("threshold", sweep={"threshold": [0.5, 0.7, 0.9]})]


def eval_decode(
    model: ModelSpec = ModelSpec(),  # noqa: B008
    tasks: list[str] | None = None,
    policies: list[PolicySweep] | None = None,
    n: int | None = 200,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 64,
    temperature: float = 0.0,
    gen_length: int | None = None,
    block_length: int | None = None,
    steps: int | None = None,
    output: str = "outputs/eval/tiny-tasks",
    task_kwargs: dict[str, dict] | None = None,
    wandb: bool = False,
    bootstrap: int = 1000,
    windows: list[float] | None = None,
    select_n: int = 0,
    select_seed: int | None = None,
    compile_select: bool | str = False,
) -> list[dict]:
    """Decode tasks × policies × sweeps; table, items JSONL, summary.json, frontier.png.

    Args:
        model: the model to load (a local directory and its loading settings).
        tasks: synthetic task names (default sudoku4, permutation) (`sudoku4`, ...) or benchmarks (`gsm8k`, `math500`, `humaneval`, `mbpp`).
        policies: policy presets with fixed `knobs` and a `sweep` grid (default: low_confidence and a
            threshold sweep).
        n: items per task (None: all of a benchmark's split).
        split: which split to evaluate.
        seed: seeds the item draw and sampling.
        batch_size: prompts per decode batch (a benchmark's items are batched by prompt length,
            so that left padding stays small; a synthetic task's in the draw's order).
        temperature: 0 = argmax; above 0, each batch samples with its own seed, from `seed` and
            its first item (`decoding.batch_seed`), so a resumed run samples other noise.
        gen_length: answer canvas (default: the task's).
        block_length: semi-autoregressive block (default: the task's).
        steps: step budget for budgeted policies (default: gen_length).
        output: results directory (re-running resumes).
        task_kwargs: per-task constructor arguments, e.g. `{gsm8k: {path: data/gsm8k.jsonl, shots: 8}}`.
        wandb: also log the table and the frontier plot to wandb.
        bootstrap: paired item resamples for the headline's intervals (`headline_ci.json`); 0: none.
        windows: accuracy windows of the headline and its intervals, as fractions below
            one-token-per-step accuracy (default [0.01], 1 point; e.g. [0.01, 0.005, 0.002, 0]).
        select_n: also decode this many held-out items per task with every run, choose each
            policy's knob on them and report it on the evaluation items (`headline_heldout.json`);
            0 (default): the headline chooses on the evaluation items only.
        select_seed: seed of the held-out draw (default `seed + 1`); items whose prompt is an
            evaluation item's are dropped from it.
        compile_select: compile each policy's step where it can be, as `depmask decode
            --compile_select` does: `true` / `jit` (`torch.compile`), `aot` (AOTInductor, disk-cached;
            policies that declare their state: `clad`, `demask`, `guided`). The oracle stays eager.
            Each compiled run decodes its first batch once untimed, so `tokens_per_s` leaves the
            compilation out; the mode is recorded with the run (its provenance and its summary row),
            and a run decoded otherwise is not resumed under it.
    """
    from depmask.models import HFDenoiser

    tasks = listed("tasks", tasks, ["sudoku4", "permutation"], "sudoku4 and permutation")
    policies = listed("policies", policies, _default_policies(), "low_confidence and a threshold sweep")
    if bootstrap < 0:
        raise ValueError(f"`bootstrap` ({bootstrap}) must be >= 0 (0: no intervals)")
    windows = [0.01] if windows is None else list(windows)
    compile_mode(compile_select)  # ValueError naming the value, before the model loads
    check_counts(n, batch_size)
    check_decoding(temperature, gen_length, block_length, steps)
    runs = check_policies(policies)  # every run's preset and knobs, before the model loads
    if any(compile_mode_for(policy, compile_select) is not None for policy in runs):  # it needs a C++ compiler
        check_compiler()
    check_seed("seed", seed)
    output = str(output_dir("output", output))  # `~` expanded; a file there is named now, not after decoding
    if select_seed is not None:
        check_seed("select_seed", select_seed)
    # every task with its arguments, and its draw (a benchmark's data file): before the model loads
    check_tasks(tasks, task_kwargs, gen_length, block_length, steps, split=split, n=n, seed=seed)
    if not windows:
        raise ValueError("`windows` is empty; give at least one accuracy window, e.g. [0.01]")
    bad = [w for w in windows if not 0 <= w <= 1]
    if bad:  # before the model loads
        raise ValueError(f"`windows` ({windows}) has entries outside [0, 1]: {bad}; each is a fraction below "
                         "one-token-per-step accuracy (0.01 = 1 point, 0 = no loss)")
    if isinstance(select_n, bool) or not isinstance(select_n, int) or select_n < 0:
        raise ValueError(f"`select_n` ({select_n!r}) must be an int >= 0 (held-out items per task; 0: none)")
    if select_seed is None:
        select_seed = seed + 1
    elif select_n and select_seed == seed:
        raise ValueError(f"`select_seed` ({select_seed}) must differ from `seed` ({seed}): the held-out items "
                         "would be the evaluation items")
    if select_n and not any(p.name == "low_confidence" for p in policies):
        raise ValueError("`select_n` needs `low_confidence` among the policies: it sets the accuracy window")
    if select_n:
        check_heldout(tasks, split, n, seed, select_n, select_seed, task_kwargs)
    den = HFDenoiser.from_pretrained(**asdict(model))
    if den.tokenizer is None:
        raise ValueError(f"model {model.path!r} has no tokenizer files; the tasks need one")
    items: list[list[dict]] = []
    rows = run_decode_eval(den, tasks, policies, output, n=n, split=split, seed=seed, batch_size=batch_size,
                           temperature=temperature, gen_length=gen_length, block_length=block_length,
                           steps=steps, task_kwargs=task_kwargs, items=items, compile_select=compile_select)
    out = Path(output)
    print(table(rows))
    write_atomic(out / "summary.json", to_json(rows).encode())
    written = set()
    if any(r["policy"] == "low_confidence" for r in rows):
        top, text = headline_report(rows, tolerances=windows)
        print(text)
        write_atomic(out / "headline.json", to_json(top).encode())
        written.add("headline.json")
        if bootstrap:
            ci = [r for w in windows for m in MEASURES
                  for r in headline_intervals(rows, items, tolerance=w, measure=m, n_boot=bootstrap, seed=seed)]
            for w in windows:
                for m in MEASURES:
                    print("\n" + intervals_table([r for r in ci if r["measure"] == m and r["tolerance"] == w]))
            write_atomic(out / "headline_ci.json", to_json(ci).encode())
            written.add("headline_ci.json")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(plain(rows))
    write_atomic(out / "summary.csv", text.getvalue().encode())
    png = plot_frontier(rows, out / "frontier.png", windows=windows)
    pooled = plot_frontier(rows, out / "frontier-pooled.png", x="tpf_pooled", windows=windows)
    if select_n:
        written |= _heldout(den, tasks, policies, out, rows, items, windows, select_n=select_n,
                            select_seed=select_seed, bootstrap=bootstrap, split=split, n=n, seed=seed,
                            batch_size=batch_size, temperature=temperature, gen_length=gen_length,
                            block_length=block_length, steps=steps, task_kwargs=task_kwargs,
                            compile_select=compile_select)
    for name in OPTIONAL_OUTPUTS:  # an earlier invocation's file that this one did not write: not of these runs
        if name not in written:
            (out / name).unlink(missing_ok=True)
    print(f"wrote {out / 'summary.json'}, {out / 'summary.csv'}, {png}, {pooled.name} and items/ under {out}")
    if wandb:
        settings = {"model": asdict(model), "tasks": tasks, "n": n, "split": split, "seed": seed,
                    "temperature": temperature, "gen_length": gen_length, "block_length": block_length,
                    "steps": steps, "windows": windows, "task_kwargs": task_kwargs,
                    "policies": [{"name": p.name, "label": p.label, "knobs": p.knobs, "sweep": p.sweep}
                                 for p in policies], "compile_select": compile_select, "batch_size": batch_size,
                    "bootstrap": bootstrap, "select_n": select_n, "select_seed": select_seed,
                    "model_fingerprint": den.fingerprint}
        _log_wandb(rows, [png, pooled], out, settings, top if any(r["policy"] == "low_confidence" for r in rows)
                   else None)
    return rows


def _heldout(den, tasks, policies, out: Path, rows: list[dict], items: list[list[dict]], windows: list[float], *,
             select_n: int, select_seed: int, bootstrap: int, split: str, n: int | None, seed: int, task_kwargs,
             **decode) -> set[str]:
    """Decode the held-out items with every run (`out/select/`), choose knobs there, score them on
    `rows`; prints the tables and writes `headline_heldout.json` (and, with `bootstrap`, the
    intervals over both item sets, `headline_heldout_ci.json`). Returns the files written, relative
    to `out`."""
    exclude = task_prompts(tasks, split, n, seed, task_kwargs)
    select_items: list[list[dict]] = []
    select_rows = run_decode_eval(den, tasks, policies, out / "select", n=select_n, split=split, seed=select_seed,
                                  task_kwargs=task_kwargs, exclude=exclude, items=select_items, **decode)
    write_atomic(out / "select" / "summary.json", to_json(select_rows).encode())
    held = [r for w in windows for m in MEASURES
            for r in heldout_headline(select_rows, rows, tolerance=w, measure=m)]
    for w in windows:
        for m in MEASURES:
            print("\n" + heldout_table([r for r in held if r["measure"] == m and r["tolerance"] == w]))
    write_atomic(out / "headline_heldout.json", to_json(held).encode())
    if bootstrap:
        ci = [r for w in windows for m in MEASURES
              for r in heldout_intervals(select_rows, select_items, rows, items, tolerance=w, measure=m,
                                         n_boot=bootstrap, seed=seed)]
        for w in windows:
            for m in MEASURES:
                print("\n" + heldout_intervals_table([r for r in ci if r["measure"] == m and r["tolerance"] == w]))
        write_atomic(out / "headline_heldout_ci.json", to_json(ci).encode())
        return {"select/summary.json", "headline_heldout.json", "headline_heldout_ci.json"}
    return {"select/summary.json", "headline_heldout.json"}


def _log_wandb(rows: list[dict], pngs: list[Path], out: Path, settings: dict | None = None,
               headline_rows: list[dict] | None = None) -> None:
    """The summary table, the plots and, when given, the headline table, in a run whose config holds
    the evaluation's settings (model, tasks, items, seed, policies, ...), so runs compare in the UI."""
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    import wandb

    def table(items: list[dict]):
        keys = list(dict.fromkeys(k for r in items for k in r))
        return wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in plain(items)])

    config = {"output": str(out), **plain(json.loads(json.dumps(settings or {}, default=str)))}
    # a run of its own: by default `init` returns a run still active in the process (a Lightning fit's
    # with the wandb logger, in the same Python session), whose log and config this evaluation went into
    run = wandb.init(project="depmask", job_type="eval-decode", dir=os.environ.get("WANDB_DIR", str(out)),
                     config=config, reinit="create_new")
    run.log({"summary": table(rows), **({"headline": table(headline_rows)} if headline_rows else {}),
             **{png.stem: wandb.Image(str(png)) for png in pngs}})
    run.finish()
