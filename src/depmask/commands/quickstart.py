"""`depmask quickstart`: the main job on the embedded default model, with no arguments.

Decodes a sample of each task's held-out test split with every decoding policy depmask ships (at
its default knobs, temperature 0), scores each completion with the task's exact verifier, prints
a task × policy table (accuracy, NFE, TPF, seconds), and writes `summary.json` (a list of rows:
task, policy, its knob values, accuracy, nfe, tpf, seconds, n) and `frontier.png` (accuracy
against tokens per forward). It does not train or harvest anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from depmask.decoding import POLICIES, build_policy
from depmask.eval import DEFAULT_TASKS, score_task
from depmask.tasks import get_task


def embedded_model_path() -> Path:
    """The shipped model: `models/tiny-tasks` in the working directory, else in the checkout."""
    here = Path("models/tiny-tasks")
    if (here / "config.json").is_file():
        return here
    return Path(__file__).resolve().parents[3] / "models" / "tiny-tasks"


def quickstart(
    model: str | None = None,
    tasks: list[str] = DEFAULT_TASKS,  # noqa: B006
    policies: list[str] | None = None,
    n: int = 100,
    seed: int = 0,
    out_dir: str = "outputs/quickstart",
    device: str | None = None,
) -> list[dict]:
    """Decode every task with every policy on the embedded model; table, summary.json, plot.

    Args:
        model: model directory (default: the shipped `models/tiny-tasks`).
        tasks: task names.
        policies: policy presets (default: all of them).
        n: test items per task.
        seed: seed of the test-item draw.
        out_dir: where `summary.json` and `frontier.png` go.
        device: torch device (default: cpu).
    """
    from depmask.models import HFDenoiser

    path = Path(model) if model else embedded_model_path()
    policies = list(policies or POLICIES)
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"`policies` has unknown presets {unknown}; expected some of {sorted(POLICIES)}")
    den = HFDenoiser.from_pretrained(path, device=device or "cpu")
    if den.tokenizer is None:
        raise ValueError(f"model {str(path)!r} has no tokenizer; the tasks need one")
    rows = []
    jobs = [(t, p) for t in tasks for p in policies]
    for task_name, policy_name in tqdm(jobs, desc="quickstart", unit="decode"):
        task = get_task(task_name)
        policy = build_policy(policy_name)
        result = score_task(den, den.tokenizer, task, policy, n, seed)
        rows.append({"task": task_name, "policy": policy_name, **policy.knobs(), **result})
    print(_table(rows))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    plot_frontier(rows, out / "frontier.png")
    print(f"wrote {out / 'summary.json'} and {out / 'frontier.png'}")
    return rows


def _table(rows: list[dict]) -> str:
    lines = [f"{'task':<12} {'policy':<15} {'accuracy':>9} {'NFE':>7} {'TPF':>6} {'seconds':>8}"]
    for r in rows:
        lines.append(f"{r['task']:<12} {r['policy']:<15} {100 * r['accuracy']:>8.1f}% {r['nfe']:>7.2f} "
                     f"{r['tpf']:>6.2f} {r['seconds']:>8.2f}")
    return "\n".join(lines)


def plot_frontier(rows: list[dict], path: Path) -> None:
    """One panel per task: accuracy against tokens per forward, one labelled point per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in rows if r["task"] == task):
            ax.scatter(r["tpf"], 100 * r["accuracy"], s=25)
            ax.annotate(r["policy"], (r["tpf"], 100 * r["accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_title(task)
        ax.set_xlabel("tokens per forward (TPF)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
