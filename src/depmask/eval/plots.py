"""The accuracy-vs-TPF frontier plot: one panel per task, one line per policy across its sweep.

A probing policy (the oracle: its perturbed forwards are counted in TPF) is drawn dashed at its
decoding-step TPF (AFP), the parallelism a perfect predictor would allow. `pyplot()` and
`save_figure()` are the headless matplotlib set-up and PNG writing every eval plot shares.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """`matplotlib.pyplot` on the headless Agg backend (imported lazily: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out `fig`, write it to `path` (PNG, parents created), close it; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def plot_frontier(rows: list[dict], path: str | Path, x: str = "tpf") -> Path:
    """Save the frontier of `rows` (summary rows) to `path` (PNG); returns the path."""
    plt = pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.5 * max(len(tasks), 1), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in rows if r["task"] == task]
        for policy in dict.fromkeys(r["policy"] for r in mine):
            runs = [r for r in mine if r["policy"] == policy]
            probing = x == "tpf" and any(r.get("probe_nfe", 0) > 0 for r in runs)
            key = "afp" if probing else x
            xs, ys = zip(*sorted((r[key], 100 * r["accuracy"]) for r in runs))
            ax.plot(xs, ys, marker="o", ms=3.5, lw=1.2, ls="--" if probing else "-",
                    label=f"{policy} (decode steps)" if probing else policy)
        ax.set_title(task)
        ax.set_xlabel("tokens per forward (TPF)" if x == "tpf" else x)
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)
