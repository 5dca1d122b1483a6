"""The accuracy-vs-TPF frontier plot: one panel per task, one line per policy across its sweep;
below it, the same runs zoomed on the top of the accuracy axis, where the headline is read (the
reference policy's accuracy and its 1-point window drawn as lines).

The x axis is a summary column, by default `tpf` (`tpf_pooled`: all tokens / all forwards). A
probing policy (the oracle: its perturbed forwards are counted in TPF) is drawn dashed at its
decoding-forward TPF, the parallelism a perfect predictor would allow. `pyplot()` and
`save_figure()` are the headless matplotlib set-up and PNG writing every eval plot shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from depmask.eval.headline import MEASURES, TITLES


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


def plot_frontier(
    rows: list[dict], path: str | Path, x: str = "tpf", reference: str = "low_confidence", zoom: float = 4.0,
    windows: Sequence[float] = (0.01,),
) -> Path:
    """Save the frontier of `rows` (summary rows) to `path` (PNG); returns the path. The second row
    shows accuracies from `zoom` points below the `reference` policy's (the best run's without it)
    up to the most accurate run, with a dotted line at each headline window below the reference
    (`windows`, fractions: 0.01 = 1 point); the zoom widens to hold the widest window. A policy
    that probes (the oracle) is drawn at its decoding-forward TPF, dashed, wherever it probes in
    any task, so the one legend says so for every panel. A policy keeps one colour in every panel,
    and the legend (in the last top panel) lists every policy of every task."""
    plt = pyplot()
    zoom = max(zoom, 100 * max(windows, default=0) + 1)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    probes = {r["policy"] for r in rows if x in MEASURES and r.get("probe_nfe", 0) > 0}
    colours = {p: f"C{i % 10}" for i, p in enumerate(dict.fromkeys(r["policy"] for r in rows))}
    legend = {}  # label -> a line drawn with it, over all panels
    cols = max(len(tasks), 1)
    fig, axes = plt.subplots(2, cols, figsize=(4.5 * cols, 7.0), squeeze=False, height_ratios=[1.0, 0.85])
    panels = [(ax, zoomed, task) for row, zoomed in enumerate((False, True)) for ax, task in zip(axes[row], tasks)]
    for ax, zoomed, task in panels:
        mine = [r for r in rows if r["task"] == task]
        has_reference = any(r["policy"] == reference for r in mine)
        top = 100 * max(r["accuracy"] for r in mine if r["policy"] == reference or not has_reference)
        low = max(top - zoom, -1.0)  # a window as wide as the panel: the zoom is the whole range
        shown, highest = [], top  # TPF of the parallel decoders' points inside the zoom; its top
        for policy in dict.fromkeys(r["policy"] for r in mine):
            runs = [r for r in mine if r["policy"] == policy]
            probing = policy in probes
            key = MEASURES[x] if probing else x
            points = sorted((r[key], 100 * r["accuracy"]) for r in runs)
            if policy != reference:  # the reference sits at TPF 1, left of everything
                shown += [px for px, py in points if py >= low]
                highest = max([highest, *(py for _, py in points)])
            xs, ys = zip(*points)
            label = f"{policy} (decode steps)" if probing else policy
            (line,) = ax.plot(xs, ys, marker="o", ms=3.5, lw=1.2, ls="--" if probing else "-",
                              color=colours[policy], label=label)
            legend.setdefault(label, line)
        ax.set_xlabel(f"tokens per forward ({TITLES[x]})" if x in TITLES else x, fontsize=8)
        ax.grid(alpha=0.3)
        if not zoomed:
            ax.set_title(task)
            ax.set_ylim(-5, 105)
            continue
        ax.set_title(f"{task}: within {zoom:g} points of {reference if has_reference else 'the best'}", fontsize=9)
        ax.axhline(top, color="0.4", lw=0.8)
        for w in windows:  # the headline's accuracy windows (no loss is the solid line)
            if 0 < 100 * w < zoom and top - 100 * w > low:
                ax.axhline(top - 100 * w, color="0.4", lw=0.8, ls=":")
        ax.set_ylim(low, min(highest, 100.0) + zoom / 10)  # runs more accurate than the reference too
        if shown:
            pad = 0.05 * (max(shown) - min(shown)) + 0.05
            ax.set_xlim(min(shown) - pad, max(shown) + pad)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[1][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(list(legend.values()), list(legend), fontsize=7, loc="lower left")
    return save_figure(fig, path)
