"""What a dependency head buys against what it costs: for each evaluated head, the best tokens per
forward it reaches within an accuracy window of one-token-per-step decoding, against its
selection time per step over the base forward's, next to today's confidence rules and the oracle.

    python benchmarks/head_tradeoff.py --reference outputs/eval/tiny-tasks \\
        --point shipped outputs/eval/tiny-tasks demask --point large outputs/eval/tiny-tasks demask-large \\
        --out outputs/bench/head_tradeoff.json --plot docs/head-tradeoff.png

Each `--point LABEL EVAL_DIR POLICY` takes a `depmask eval decode` output directory and the label
of a head policy's sweep in it (`demask`, or a sweep's `label`). Accuracy and TPF come from its
`summary.json` (`--task`, `--measure`: `tpf_pooled` or `tpf`; the best run with accuracy ≥ the
directory's `low_confidence` accuracy − `--window`). The head is the one those runs name (their
`head` knob); its weights must still be the ones that decoded them (the runs' provenance records),
or the point is refused. The cost is measured here: a decode of `--batch` test prompts with that
head's run (its preset with every knob it was decoded with: ε, and a crossing's units, rule and
τ), each step replayed as `benchmarks/selection_overhead.py` does (select right
after the step's forward and statistics; `--compile aot` as `compile_select="aot"` runs it), median
of `--repeats`: `ratio` = select / bare forward. `--reference` (optional) names a directory with
confidence-rule sweeps (`threshold`, `entropy_bound`, `factor`, ...: the headline's `BASELINES`)
and an `oracle` sweep on the same items: the best rule's TPF in the window and the oracle's
(without its probe forwards) draw the lines of the plot, and each point gets the
share of the oracle's headroom over the best confidence rule that it closes. Prints a table,
writes JSON and, with `--plot`, a figure: cost on the x axis (the 5 % budget dashed), TPF up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_args import count, natural  # noqa: E402
from decode_replay import Recorder  # noqa: E402
from selection_overhead import TARGET, measure  # noqa: E402

from depmask.decoding import build_policy, generate  # noqa: E402
from depmask.eval.headline import check_tolerance, headline  # noqa: E402
from depmask.eval.headline_ci import BASELINES, ORACLE  # noqa: E402
from depmask.eval.items import provenance_path, weights_digest  # noqa: E402
from depmask.eval.summary import run_key  # noqa: E402
from depmask.models import HFDenoiser  # noqa: E402
from depmask.tasks import get_task  # noqa: E402


def load_rows(directory: Path, task: str) -> list[dict]:
    path = Path(directory) / "summary.json"
    if not path.is_file():
        raise ValueError(f"`{directory}` has no summary.json: give a `depmask eval decode` output directory")
    rows = [r for r in json.loads(path.read_text()) if r["task"] == task]
    if not rows:
        raise ValueError(f"`{path}` has no runs of task {task!r}")
    return rows


def best_in_window(rows: list[dict], policy: str, window: float, measure_key: str) -> dict | None:
    """The run (summary row) of `policy` that the headline picks within `window` of
    one-token-per-step accuracy (`eval.headline.headline`), or None when none is within it."""
    tops = headline(rows, tolerance=window, measure=measure_key)
    if not tops:
        raise ValueError(f"no `low_confidence` run of task {rows[0]['task']!r}: it sets the accuracy window")
    top = next((t for t in tops if t["policy"] == policy), None)
    if top is None or top["accuracy"] is None:
        return None
    return next(r for r in rows if r["policy"] == policy and run_key(r) == top["run"])


def run_entry(directory: Path, task: str, run: dict) -> tuple[str, dict]:
    """`runs.json`'s key and entry of `run` (a summary row): the same task and label, and every knob
    of the entry equal to the row's (ε alone does not tell apart a threshold × ε sweep's runs)."""
    runs = json.loads((Path(directory) / "runs.json").read_text())
    for key, entry in runs.items():
        if entry["task"] == task and entry["label"] == run["policy"] and all(
                run.get(k) == (str(v) if k == "head" else v) for k, v in entry["knobs"].items()):
            return key, entry
    raise ValueError(f"`{directory}/runs.json` has no run {run['policy']} of {task!r} with the knobs of its summary row")


def head_of(directory: Path, task: str, run: dict) -> tuple[str, str, dict]:
    """The head directory `run` names, checked against the weights that decoded it, with the run's
    preset and knobs (the head's path among them) to rebuild its policy."""
    head = run.get("head")
    if not head:
        raise ValueError(f"run {run['policy']} of `{directory}` names no `head`: not a head policy")
    key, entry = run_entry(directory, task, run)
    head = str(Path(head).expanduser())  # as the eval loaded it (`~/heads/h` was "gone")
    side = provenance_path(Path(directory) / "items" / f"{key}.jsonl")
    if not Path(head).is_dir():
        raise ValueError(f"the head `{head}` that decoded `{directory}` ({run['policy']}) is gone")
    if side.is_file():
        recorded = json.loads(side.read_text()).get("head_weights")
        if recorded is not None and recorded != weights_digest(head):
            raise ValueError(f"`{head}` holds other weights than those that decoded `{directory}` "
                             f"({run['policy']}: {recorded} recorded, {weights_digest(head)} now)")
    return head, entry["policy"], {**entry["knobs"], "head": head}


def time_head(den, task, preset: str, knobs: dict, batch: int, repeats: int, compile_select: str | None,
              seed: int) -> dict:
    """The selection cost of the run's own policy (`preset` with all its `knobs`: a labelled
    `guided` crossing keeps its units, rule and τ; `demask` its confidence floor)."""
    examples = task.examples("test", batch, seed=seed)
    prompts = [den.tokenizer.convert_tokens_to_ids(ex.prompt.split()) for ex in examples]
    policy = build_policy(preset, **knobs)
    rec = Recorder(policy)
    generate(den, prompts, rec, gen_length=task.answer_length, pad_id=den.tokenizer.pad_token_id)
    mean = measure(den, policy, rec.states, repeats, compile_select)
    return {"select_ms": mean["select"], "forward_ms": mean["forward"], "ratio": mean["select"] / mean["forward"],
            "flops_ratio": mean["flops_ratio"], "steps": len(rec.states)}


def drawn_items(directory: Path, task: str) -> set[str] | None:
    """The digests of the draws the eval at `directory` scored `task` on (`runs.json`'s
    `items_digest`: each item's id, prompt and answer; None for an older eval, whose
    `items_sha256` hashed ids alone, the same under other task arguments). Its results files may
    hold more items, from earlier draws."""
    index = json.loads((directory / "runs.json").read_text()) if (directory / "runs.json").is_file() else {}
    digests = {e.get("items_digest") for e in index.values() if e.get("task") == task}
    return None if not digests or None in digests else digests


def check_same_items(reference: Path, points: list[tuple[str, str, str]], task: str) -> None:
    """Refuse points scored on other items than the reference lines: the share of the headroom
    compares TPFs, which only means something on the same items."""
    want = drawn_items(reference, task)
    for label, directory, _ in points:
        got = drawn_items(Path(directory), task)
        if want is None or got is None:
            print(f"--point {label}: cannot check that `{directory}` and --reference `{reference}` scored the same "
                  f"{task} items (an eval from before runs.json recorded them)", file=sys.stderr)
        elif got != want:
            raise SystemExit(f"--point {label}: `{directory}` scored other {task} items than --reference "
                             f"`{reference}` (another --n, --seed or --split); decode both on the same items")


def reference_lines(directory: Path, task: str, window: float, measure_key: str) -> dict:
    """The headline's best confidence rule (`BASELINES`) and the oracle (its decoding forwards
    only) within the window."""
    tops = headline(load_rows(directory, task), tolerance=window, measure=measure_key)
    rules = [t for t in tops if t["policy"] in BASELINES and t["tpf"] is not None]
    rule = max(rules, key=lambda t: t["tpf"], default=None)
    oracle = next((t for t in tops if t["policy"] == ORACLE and t["tpf"] is not None), None)
    return {"confidence": _line(rule, "tpf"), "oracle": _line(oracle, "decode_tpf")}


def _line(top: dict | None, key: str) -> dict | None:
    if top is None:
        return None
    return {"policy": top["policy"], "accuracy": top["accuracy"], "tpf": top[key], "knobs": top["knobs"]}


def plot(points: list[dict], lines: dict | None, path: Path, measure_key: str, window: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.set_xscale("log")
    for p in points:
        ax.scatter(p["ratio"], p["tpf"], s=36, color="C0" if p["ratio"] <= TARGET else "C3", zorder=3)
    # the colours' meaning, in the legend (empty scatters: legend entries only)
    ax.scatter([], [], s=36, color="C0", label=f"head within the {TARGET:.0%} budget")
    ax.scatter([], [], s=36, color="C3", label="head over the budget")
    ax.axvline(TARGET, color="grey", linestyle="--", linewidth=1)
    if lines and lines["confidence"] and lines["oracle"]:
        low, high = lines["confidence"]["tpf"], lines["oracle"]["tpf"]
        ax.axhline(low, color="C2", linewidth=1, label=f"best confidence rule ({lines['confidence']['policy']})")
        ax.axhline(high, color="k", linewidth=1, label="oracle (decoding forwards)")
        ax.axhline(low + (high - low) / 2, color="k", linestyle=":", linewidth=1, label="half of the headroom")
    ax.legend(fontsize=8, loc="lower right")
    ax.text(TARGET, ax.get_ylim()[1], f" {TARGET:.0%} budget", fontsize=8, color="grey", va="top")
    ax.set_xlabel("selection time per step / base forward (log)")
    ax.set_ylabel(f"best {'pooled TPF' if measure_key == 'tpf_pooled' else 'per-item TPF'} within "
                  f"{100 * window:g} point(s)")
    ax.set_title("dependency heads: what they buy against what they cost", fontsize=10)
    fig.tight_layout()
    _labels(ax, points)  # last: the axes' limits and layout are final
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _labels(ax, points: list[dict], gap: float = 10.0) -> None:
    """Each point's label to its right, moved up (in steps of `gap` points of type) past labels
    already placed near it, so that a cluster of similar heads stays readable."""
    ax.figure.canvas.draw()  # fixes the data-to-display transform
    to_px = ax.transData.transform
    placed: list[tuple[float, float]] = []  # display coordinates (px) of placed labels
    step = gap * ax.figure.dpi / 72
    for p in sorted(points, key=lambda p: (p["tpf"], p["ratio"])):
        x, y = to_px((p["ratio"], p["tpf"]))
        lift = 0.0
        while any(abs(x - px) < 90 and abs(y + lift - py) < step for px, py in placed):
            lift += step
        placed.append((x, y + lift))
        ax.annotate(p["label"], (p["ratio"], p["tpf"]), textcoords="offset pixels", xytext=(6, lift - 3),
                    fontsize=7.5, arrowprops=dict(arrowstyle="-", color="0.6", linewidth=0.5) if lift else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--point", nargs=3, action="append", metavar=("LABEL", "EVAL_DIR", "POLICY"), required=True)
    ap.add_argument("--reference", default=None, help="eval directory with threshold / entropy_bound / oracle runs")
    ap.add_argument("--model", default="models/tiny-tasks")
    ap.add_argument("--task", default="sudoku4")
    ap.add_argument("--window", type=float, default=0.01, help="accuracy window below one-token-per-step (0.01 = 1 point)")
    ap.add_argument("--measure", default="tpf_pooled", choices=["tpf_pooled", "tpf"])
    ap.add_argument("--batch", type=count, default=8)
    ap.add_argument("--repeats", type=count, default=20)
    ap.add_argument("--threads", type=natural, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", default="aot", choices=["none", "jit", "aot"])
    ap.add_argument("--out", default="outputs/bench/head_tradeoff.json")
    ap.add_argument("--plot", default=None, help="write the figure here (PNG)")
    args = ap.parse_args()
    try:
        check_tolerance(args.window)
    except ValueError as e:
        ap.error(f"--window: {e}")
    chosen = []  # every point's run and head, checked before the model loads and before any timing
    for label, directory, policy in args.point:
        if not (Path(directory) / "summary.json").is_file():
            ap.error(f"--point {label}: `{directory}` has no summary.json (an `eval decode` output directory)")
        try:
            rows = load_rows(Path(directory), args.task)
            labels = sorted({r["policy"] for r in rows})
            if policy not in labels:
                ap.error(f"--point {label}: `{directory}` has no run labelled {policy!r} for {args.task!r}; "
                         f"its labels: {', '.join(labels)}")
            run = best_in_window(rows, policy, args.window, args.measure)
        except ValueError as e:
            ap.error(f"--point {label} / --task: {e}")
        if run is None:
            ap.error(f"--point {label}: no {policy!r} run of `{directory}` is within {args.window} of "
                     "one-token-per-step accuracy")
        try:
            chosen.append((label, directory, policy, run, *head_of(Path(directory), args.task, run)))
        except ValueError as e:
            ap.error(f"--point {label}: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = None
    if args.reference:
        try:
            lines = reference_lines(Path(args.reference), args.task, args.window, args.measure)
        except ValueError as e:
            ap.error(f"--reference: {e}")
        check_same_items(Path(args.reference), args.point, args.task)
    try:
        den = HFDenoiser.from_pretrained(args.model, device="cpu")
    except (OSError, ValueError) as e:
        ap.error(f"--model: {e}")
    task = get_task(args.task)
    points = []
    for label, directory, policy, run, head, preset, knobs in chosen:
        cost = time_head(den, task, preset, knobs, args.batch, args.repeats,
                         None if args.compile == "none" else args.compile, args.seed)
        point = {"label": label, "eval_dir": directory, "policy": policy, "head": head, "epsilon": run.get("epsilon"),
                 "timed": {"preset": preset, **{k: v for k, v in knobs.items() if k != "head"}},
                 "accuracy": run["accuracy"], "tpf": run[args.measure], **cost}
        if lines and lines["confidence"] and lines["oracle"]:
            low, high = lines["confidence"]["tpf"], lines["oracle"]["tpf"]
            point["share"] = (point["tpf"] - low) / (high - low) if high > low else None
        points.append(point)
    print(f"{'head':<16} {'ε':>5} {'accuracy':>9} {'TPF':>6} {'share':>6} {'select ms':>10} {'forward ms':>11} "
          f"{'ratio':>7} {'FLOPs':>7}")
    for p in points:
        share = f"{p['share']:.0%}" if p.get("share") is not None else "—"
        eps = "-" if p["epsilon"] is None else f"{p['epsilon']:g}"  # a conflict-rule crossing has no ε
        print(f"{p['label']:<16} {eps:>5} {100 * p['accuracy']:>8.1f}% {p['tpf']:>6.2f} {share:>6} "
              f"{p['select_ms']:>10.3f} {p['forward_ms']:>11.3f} {p['ratio']:>7.3f} {p['flops_ratio']:>7.4f}")
    if lines:
        for k, r in lines.items():
            if r:
                print(f"{k}: {r['policy']} {r['knobs']} {r['tpf']:.2f} at {100 * r['accuracy']:.1f}%")
    both = [p["label"] for p in points if p["ratio"] <= TARGET and (p.get("share") or 0) > 0.5]
    print(f"heads within the {TARGET:.0%} budget whose point estimate closes over half of the headroom "
          f"(knob chosen on these items, no interval: a lead, not a result): {both or 'none'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"task": args.task, "window": args.window, "measure": args.measure,
                               "compile": args.compile, "threads": torch.get_num_threads(), "batch": args.batch,
                               "reference": lines, "points": points}, indent=2))
    print(f"wrote {out}")
    if args.plot:
        plot(points, lines, Path(args.plot), args.measure, args.window)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
