"""The frontier plot shows what the headline reads: runs more accurate than the reference stay in
the zoomed panel, a wide window widens it, and a probing policy is labelled in the one legend."""

import depmask.eval.plots as plots


def _row(task, policy, acc, tpf, probe=0, **knobs):
    return {"task": task, "policy": policy, "accuracy": acc, "tpf": tpf, "afp": tpf * 2, "probe_nfe": probe, **knobs}


def _figure(monkeypatch, rows, **kwargs):
    kept = {}

    def keep(fig, path):
        kept["fig"] = fig
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    plots.plot_frontier(rows, "unused.png", **kwargs)
    return kept["fig"]


def test_the_zoom_keeps_runs_above_the_reference_and_widens_for_a_wide_window(monkeypatch):
    rows = [_row("t", "low_confidence", 0.78, 1.0), _row("t", "threshold", 0.80, 3.0, threshold=0.9),
            _row("t", "threshold", 0.79, 3.6, threshold=0.7)]
    zoomed = _figure(monkeypatch, rows).axes[1]
    low, high = zoomed.get_ylim()
    assert high >= 80 and low <= 78 - 4  # both threshold runs (80 %, 79 %) are inside
    zoomed = _figure(monkeypatch, rows, windows=[0.05]).axes[1]
    assert zoomed.get_ylim()[0] <= 78 - 5  # the 5-point window's line is inside the panel


def test_a_policy_that_probes_in_any_task_is_labelled_so_in_the_legend(monkeypatch):
    rows = [_row("a", "low_confidence", 1.0, 1.0), _row("a", "oracle-conflict", 1.0, 0.8, probe=16),
            _row("b", "low_confidence", 1.0, 1.0), _row("b", "oracle-conflict", 1.0, 1.0, probe=0)]
    fig = _figure(monkeypatch, rows)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]  # the legend: the last task's panel
    assert "oracle-conflict (decode steps)" in labels


def test_a_policy_keeps_its_colour_across_panels_and_the_legend_lists_every_task_s_policies(monkeypatch):
    # task a runs threshold, task b does not: without a shared map, factor would take threshold's colour in b
    rows = [_row("a", "low_confidence", 1.0, 1.0), _row("a", "threshold", 0.99, 3.0), _row("a", "factor", 0.99, 2.0),
            _row("b", "low_confidence", 1.0, 1.0), _row("b", "factor", 0.98, 2.5)]
    fig = _figure(monkeypatch, rows)
    colour = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):  # the headline's guide lines are unlabelled
                colour.setdefault(line.get_label(), set()).add(line.get_color())
    assert set(colour) == {"low_confidence", "threshold", "factor"}
    assert all(len(c) == 1 for c in colour.values()) and len({next(iter(c)) for c in colour.values()}) == 3
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]  # task b's panel, without threshold
    assert labels == ["low_confidence", "threshold", "factor"]
