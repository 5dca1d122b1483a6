"""`depmask eval subadditivity --config configs/eval/subadditivity-tiny.yaml`: does the pairwise
influence sum bound the error of committing a set in parallel?

Decodes held-out items of each task with each policy; at every state where the policy commits a
set S of ≥ 2 positions it measures TV(product of marginals, sequential joint in confidence order)
and the pairwise-sum bounds (`depmask.eval.subadditivity` has the exact definitions). Prints one
row per (task, policy) and writes into `--output`: `states.jsonl` (one row per measured state),
`subadditivity.json` (the rows) and `scatter.png` (TV against the k = 1 bound, log-log, y = x).
Each finished run is kept in `runs/` as it ends: an interrupted command, run again, measures only
the runs it had not finished (a run whose task, knobs, items, settings or model differ is measured
again).
It measures only the states each policy visits on its own trajectory; it does not train or harvest.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from depmask.eval.plots import pyplot, save_figure
from depmask.eval.runner import PolicySweep
from depmask.eval.subadditivity import HOLD_TOLERANCE

FLOOR = 1e-6  # values below this are drawn at this value on the log-log scatter


def _default_policies() -> list[PolicySweep]:
    return [PolicySweep("threshold", sweep={"threshold": [0.5, 0.7, 0.9]}),
            PolicySweep("entropy_bound", sweep={"gamma": [0.1, 1.0]}), PolicySweep("demask", sweep={"epsilon": [0.1, 1.0]})]


def eval_subadditivity(
    model: str = "models/tiny-tasks",
    tasks: list[str] | None = None,
    policies: list[PolicySweep] | None = None,
    head: str = "models/tiny-tasks-head",
    n: int = 40,
    split: str = "test",
    samples: int = 256,
    exact_max_set: int = 3,
    delta: float = 1e-3,
    max_enumeration: int = 2048,
    topk: int = 3,
    batch_size: int = 40,
    seed: int = 0,
    output: str = "outputs/eval/subadditivity",
) -> list[dict]:
    """Measure TV(product, sequential joint) against the pairwise-influence bound; table, JSON, plot.

    Args:
        model: local directory of the model (`HFDenoiser.from_pretrained`).
        tasks: synthetic task names (default: sudoku4, permutation).
        policies: policy presets with `knobs` and a `sweep` grid, as in `eval decode` (default:
            threshold τ ∈ {0.5, 0.7, 0.9}, entropy_bound γ ∈ {0.1, 1}, demask ε ∈ {0.1, 1}; the looser
            knobs are there because on `permutation` the tighter ones commit one token per step).
        head: dependency-head directory given to `demask` runs that name none.
        n: held-out items per task.
        split: which split the items come from.
        samples: Monte-Carlo draws for sets that cannot be enumerated.
        exact_max_set: sets up to this size are enumerated over the full vocabulary (exact), when that
            costs ≤ `max_enumeration` forwards.
        delta: larger sets: each position keeps its top values with mass ≥ 1 − δ, and the grid is
            enumerated with a certified error bound, when that fits; otherwise sampling.
        max_enumeration: most sequences one enumeration may run through the model.
        topk: values of p_j averaged over for the expected-influence bounds.
        batch_size: prompts per decode batch.
        seed: seeds the item draw and the Monte-Carlo draws.
        output: results directory.
    """
    from depmask.data_gen.shards import write_atomic
    from depmask.decoding import build_policy, generate
    from depmask.decoding.influence import check_topk
    from depmask.eval.items import run_provenance, run_slug
    from depmask.eval.runner import check_counts, check_policies, check_seed, check_tasks, listed
    from depmask.eval.subadditivity import SetProbe
    from depmask.eval.summary import to_json
    from depmask.models import HFDenoiser
    from depmask.paths import output_dir
    from depmask.tasks.adapter import TaskAdapter

    check_counts(n, batch_size)  # before the model loads
    check_seed("seed", seed)
    out = output_dir("output", output)

    tasks = listed("tasks", tasks, ["sudoku4", "permutation"], "sudoku4 and permutation")
    policies = listed("policies", policies, _default_policies(), "the default sweeps")
    check_policies(policies, defaults={"demask": {"head": head}})  # as the runs below build them
    for name, value, least in (("samples", samples, 2), ("exact_max_set", exact_max_set, 0),  # 0: never exact
                               ("max_enumeration", max_enumeration, 0), ("topk", topk, 1)):  # 0: always sampled
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"`{name}` ({value!r}) must be an int >= {least}")
    if not 0 < delta < 1:
        raise ValueError(f"`delta` ({delta}) must lie in (0, 1): the probability mass each position may leave out")
    check_tasks(tasks, None, split=split, n=n, seed=seed)  # every task and its draw, before the model loads
    den = HFDenoiser.from_pretrained(model)
    if den.tokenizer is None:
        raise ValueError(f"model {model!r} has no tokenizer files; the tasks need one")
    check_topk(topk, den.vocab_size)  # `top_values` took min(topk, vocabulary), recorded as asked
    for sweep in policies:  # a head for another model, before the first run (not after the runs before it)
        for knobs in sweep.expand():
            knobs = {"head": head, **knobs} if sweep.name == "demask" else knobs
            bind = getattr(build_policy(sweep.name, **knobs), "bind", None)  # the guided ones check their head
            if bind is not None:
                bind(den)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(exact_max_set=exact_max_set, delta=delta, max_enumeration=max_enumeration, samples=samples,
                    topk=topk)
    pad_id = getattr(den.tokenizer, "pad_token_id", None)
    rows, states = [], []
    runs = [(t, sweep.name, sweep.shown, knobs) for t in tasks for sweep in policies for knobs in sweep.expand()]
    done = out / RUNS_DIR
    done.mkdir(exist_ok=True)
    for task_name, name, shown, knobs in tqdm(runs, desc="eval subadditivity", unit="run", dynamic_ncols=True):
        if name == "demask" and "head" not in knobs:
            knobs = {**knobs, "head": head}
        # each finished run is kept (an interrupt lost every run before it); the same command skips it
        identity = {"task": task_name, "policy": name, "label": shown, "knobs": knobs, "n": n, "split": split,
                    "seed": seed, "batch_size": batch_size, "settings": settings,
                    # the model's fingerprint and the weights of a head knob (retrained in place: measured again)
                    "provenance": run_provenance(den.fingerprint, knobs)}
        path = done / f"{task_name}-{run_slug(shown, knobs)}.json"
        kept = _read_run(path, identity)
        if kept is not None:
            rows.append(kept["row"])
            states += kept["states"]
            continue
        adapter = TaskAdapter.build(task_name)
        examples = adapter.examples(split, n, seed)
        g = adapter.gen_length
        generator = torch.Generator(den.device).manual_seed(seed)
        mine, sizes, correct = [], [], 0
        for lo in range(0, len(examples), batch_size):
            chunk = examples[lo : lo + batch_size]
            probe = SetProbe(build_policy(name, **knobs), den.mask_id, generator=generator, **settings)
            res = generate(den, [adapter.prompt_ids(ex, den.tokenizer) for ex in chunk], probe, gen_length=g,
                           block_length=adapter.block_length, steps=g, pad_id=pad_id)
            completions = [adapter.completion(r, den.tokenizer, den.eos_ids) for r in res.generated.tolist()]
            correct += sum(adapter.grade(chunk, completions))
            sizes += probe.sizes
            for rec in probe.records:
                rec = {"task": task_name, "policy": shown, **_plain(knobs), "run": _label(shown, _plain(knobs)),
                       "example_id": chunk[rec.pop("row")].id,
                       **rec}
                mine.append(rec)
        states += mine
        rows.append(_summarize(task_name, shown, _plain(knobs), mine, sizes, correct / len(examples)))
        # Python's JSON (NaN kept as NaN): a kept run's states read back as they were measured
        write_atomic(path, json.dumps({"identity": identity, "row": rows[-1], "states": mine}, default=str).encode())
    write_atomic(out / "states.jsonl", "".join(json.dumps(rec) + "\n" for rec in states).encode())
    write_atomic(out / "subadditivity.json", to_json(rows).encode())  # standard JSON: an undefined mean is null
    png = plot_scatter(states, out / "scatter.png")
    print(table(rows))
    print(f"wrote {out / 'subadditivity.json'}, {out / 'states.jsonl'} and {png}")
    return rows


RUNS_DIR = "runs"  # one JSON per finished (task, run): its identity, summary row and measured states


def _read_run(path: Path, identity: dict) -> dict | None:
    """A finished run's record when `path` holds one of this identity (the same task, knobs, items,
    settings and model), else None: it is measured again (and its file replaced)."""
    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    same = json.loads(json.dumps(identity, default=str)) == kept.get("identity")
    return kept if same and "row" in kept and "states" in kept else None


def _plain(knobs: dict) -> dict:
    """The knobs that name a run in the rows, the table and the plot's legend: numbers, flags and
    words (`units`, `rule`, `scorer`), not the head's path (a sweep's label tells heads apart)."""
    return {k: v for k, v in knobs.items() if isinstance(v, (int, float, bool, str)) and k != "head"}


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else math.nan


def _summarize(task: str, policy: str, knobs: dict, states: list[dict], sizes: list[int], accuracy: float) -> dict:
    ratios = [s["ratio"] for s in states if s["ratio"] is not None]
    return {
        "task": task, "policy": policy, **knobs, "run": _label(policy, knobs), "accuracy": accuracy,
        "steps": len(sizes), "states": len(states),  # every decoding step seen; those with |S| ≥ 2
        "set_size": _mean(s["set_size"] for s in states), "set_size_max": max((s["set_size"] for s in states), default=0),
        "tv": _mean(s["tv"] for s in states), "bound": _mean(s["bound"] for s in states),
        "bound_topk": _mean(s["bound_topk"] for s in states), "bound_chain": _mean(s["bound_chain"] for s in states),
        "holds": _mean(float(s["holds"]) for s in states), "holds_topk": _mean(float(s["holds_topk"]) for s in states),
        "holds_chain": _mean(float(s["holds_chain"]) for s in states),
        "holds_within_err": _mean(float(s["tv_lo"] <= s["bound"] + HOLD_TOLERANCE) for s in states),
        "ratio": _mean(ratios), "ratio_median": statistics.median(ratios) if ratios else math.nan,
        "ratio_states": len(ratios), "tv_err_max": max((s["tv_err"] for s in states), default=0.0),
        "methods": dict(Counter(s["method"] for s in states)),
    }


def _label(policy: str, knobs: dict) -> str:
    text = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in knobs.items())
    return f"{policy}({text})" if text else policy


def table(rows: list[dict]) -> str:
    w = max([26, *(len(r["run"]) for r in rows)])  # whole run names: a crossing's label and knobs
    head = (f"{'task':<12} {'policy':<{w}} {'acc':>5} {'states':>9} {'|S|':>5} {'TV':>7} {'bound':>7} "
            f"{'bound holds':>11} {'TV/bound':>8} {'top-k':>7} {'holds':>6} {'chain':>7} {'holds':>6} {'err max':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['task']:<12} {r['run']:<{w}} {100 * r['accuracy']:>5.1f} {r['states']:>4}/{r['steps']:<4} "
            f"{r['set_size']:>5.2f} {r['tv']:>7.4f} {r['bound']:>7.4f} {100 * r['holds']:>10.1f}% {r['ratio']:>8.3f} "
            f"{r['bound_topk']:>7.4f} {100 * r['holds_topk']:>5.1f}% {r['bound_chain']:>7.4f} "
            f"{100 * r['holds_chain']:>5.1f}% {r['tv_err_max']:>8.1e}")
    return "\n".join(lines)


def plot_scatter(states: list[dict], path: str | Path) -> Path:
    """TV against the k = 1 bound, one panel per task, one colour per policy run; log-log, y = x."""
    plt = pyplot()

    tasks = list(dict.fromkeys(s["task"] for s in states)) or ["(no states)"]
    top = 1.5 * max([2.0] + [s["bound"] for s in states])  # the bound can exceed 1 (up to |S|(|S| − 1))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 4.3), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {run: palette[i % len(palette)] for i, run in enumerate(dict.fromkeys(s["run"] for s in states))}
    for ax, task in zip(axes[0], tasks):
        mine = [s for s in states if s["task"] == task]
        for label in dict.fromkeys(s['run'] for s in mine):
            pts = [s for s in mine if s['run'] == label]
            ax.scatter([max(s["bound"], FLOOR) for s in pts], [max(s["tv"], FLOOR) for s in pts], s=9, alpha=0.6,
                       label=label, color=colour[label])  # one colour per run in every panel
        ax.plot([FLOOR, top], [FLOOR, top], "k--", lw=1, label="TV = bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(FLOOR / 2, top)
        ax.set_ylim(FLOOR / 2, 2.0)
        ax.set_title(task)
        ax.set_xlabel("Σ_{i≠j∈S} I[i,j]  (k = 1)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, loc="lower right")  # below the diagonal: the bound's violations lie above it
    axes[0][0].set_ylabel(f"TV(product, sequential joint)  (< {FLOOR:g} drawn at {FLOOR:g})")
    return save_figure(fig, path)
