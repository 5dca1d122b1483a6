"""Details of the decode sweeps, their results files, regrading and the frontier plot that the
broader tests do not pin: what each run records of the model's settings, the checks of counts and
seeds, the sidecar's name and contents, the plotted points and lines, and `score_task`'s row."""

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import depmask.eval.plots as plots
from depmask.eval.items import (
    _flat,
    check_provenance,
    provenance_path,
    read_items,
    run_provenance,
    run_slug,
    weights_digest,
)
from depmask.eval.regrade import regrade, rewrite_items
from depmask.eval.runner import (
    PolicySweep,
    _plain,
    check_counts,
    check_decoding,
    check_policies,
    check_seed,
    denoiser_settings,
    run_decode_eval,
    run_one,
)
from depmask.models import HFDenoiser
from depmask.tasks.adapter import TaskAdapter
from tests.conftest import EMBEDDED


@pytest.fixture(scope="module")
def den():
    return HFDenoiser.from_pretrained(EMBEDDED)


# --- runner ---------------------------------------------------------------------------------


def test_denoiser_settings_record_every_loading_choice():
    """The provenance's `denoiser` block holds the mask id, EOS ids, logit shift and capture
    layers as loaded: a run resumed under another mask id or capture layers must be told apart."""
    fake = SimpleNamespace(dtype=torch.bfloat16, device="cpu", mask_id=5, eos_ids=(2, 3), logits_shift=True,
                           capture_layers=[3])
    assert denoiser_settings(fake) == {"dtype": "bfloat16", "device": "cpu", "mask_id": 5, "eos_ids": [2, 3],
                                       "logits_shift": True, "capture_layers": [3]}


def test_the_progress_bar_counts_each_item_once(tmp_path, den):
    """The bar is advanced by the items resumed, then by each decoded batch: a fresh run of 4
    items moves it by 4, a fully resumed one by 4 again (not 8)."""

    class Bar:
        postfix, n = "", 0

        def update(self, k):
            self.n += k

        def set_postfix_str(self, s):
            self.postfix = s

    adapter = TaskAdapter.build("permutation")
    exs = adapter.examples("test", 4, 0)
    kw = dict(batch_size=2, temperature=0.0, gen_length=6, block_length=6, steps=6, seed=0)
    for _ in range(2):
        bar = Bar()
        run_one(den, adapter, "low_confidence", {}, exs, tmp_path / "r.jsonl", bar=bar, **kw)
        assert bar.n == 4


def test_plain_keeps_a_knob_set_to_none():
    """A knob given as None is part of the run (its key): the row keeps it, not drops it."""
    assert _plain({"capture": None, "threshold": np.float64(0.5)}) == {"capture": None, "threshold": 0.5}


def test_counts_and_seeds_refuse_booleans_and_out_of_range_values():
    """`True` is an int to Python but no count or seed; 2**32 is past numpy's seed range."""
    for n, batch in ((True, 4), (4, True), (4, 0)):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            check_counts(n, batch)
    check_counts(None, 1)
    for bad in (True, 2**32, -1):
        with pytest.raises(ValueError, match=r"`seed` \(.*\) must be an int in \[0, 2\*\*32 - 1\]"):
            check_seed("seed", bad)
    check_seed("seed", 2**32 - 1)
    check_seed("seed", np.int64(3))


def test_decode_settings_without_a_task_need_a_gen_length():
    """`depmask decode` (tasks=False) has no task length to fall back on: gen_length None is refused."""
    with pytest.raises(ValueError, match=r"`gen_length` \(None\) must be an int >= 1$"):
        check_decoding(0.0, None, None, None, tasks=False)
    check_decoding(0.0, 8, None, None, tasks=False)  # an unset block is gen_length
    check_decoding(0.0, None, None, None, tasks=True)  # eval: the task's lengths


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -0.5, True, "0.5", None])
def test_a_temperature_the_loop_would_refuse_is_refused_before_anything_loads(temperature):
    """NaN passed `temperature < 0`; `generate` refused it only after the model had loaded."""
    with pytest.raises(ValueError, match=r"`temperature` \(.*\) must be a finite number >= 0"):
        check_decoding(temperature, 8, None, None)
    check_decoding(np.float32(0.5), 8, None, None)


def test_a_repeated_run_names_the_labelled_sweep_it_repeats():
    sweeps = [PolicySweep("guided", label="g1", knobs={"scorer": "attention"}, sweep={"epsilon": [0.2]}),
              PolicySweep("guided", label="g2", knobs={"scorer": "attention"}, sweep={"epsilon": [0.2]})]
    with pytest.raises(ValueError, match=r"policy sweep 'g2', .*the same run as one of sweep 'g1'"):
        check_policies(sweeps)


def test_a_sweeps_own_knobs_win_over_the_commands_defaults():
    """`defaults` fills in knobs a run does not set; a run that sets one keeps its own value."""
    (built,) = check_policies([PolicySweep("threshold", sweep={"threshold": [0.5]})],
                              defaults={"threshold": {"threshold": 0.9}})
    assert built.threshold == 0.5
    (built,) = check_policies([PolicySweep("threshold")], defaults={"threshold": {"threshold": 0.9}})
    assert built.threshold == 0.9


def test_runs_json_records_the_tasks_own_lengths_and_the_draws_digest(tmp_path, den):
    """With no `gen_length` given, runs.json names the length the run decoded with (the task's),
    not None; its `items_digest` is the digest of the whole draw."""
    from depmask.eval.draws import draw_digest

    run_decode_eval(den, ["sort"], [PolicySweep("low_confidence")], tmp_path / "ev", n=3, batch_size=3)
    (run,) = json.loads((tmp_path / "ev" / "runs.json").read_text()).values()
    adapter = TaskAdapter.build("sort")
    assert (run["gen_length"], run["block_length"]) == (adapter.gen_length, adapter.block_length)
    assert run["items_digest"] == draw_digest(adapter.examples("test", 3, 0))


# --- items ----------------------------------------------------------------------------------


def test_the_sidecar_is_named_after_the_run_not_its_file():
    """`<run>.provenance.json`, as documented: output directories already hold sidecars by that name."""
    assert provenance_path(Path("out/items/sort/run_ab12.jsonl")) == Path("out/items/sort/run_ab12.provenance.json")


def test_a_runs_name_does_not_depend_on_the_order_of_its_knobs():
    assert run_slug("guided", {"threshold": 0.9, "rule": "conflict", "units": "token"}) == \
        run_slug("guided", {"units": "token", "rule": "conflict", "threshold": 0.9})


def test_every_checkpoint_knob_is_digested_in_either_weights_format(tmp_path):
    """Any knob naming a checkpoint directory (not only `head`) ties the run to its weights, and
    a directory holding `pytorch_model.bin` counts as one."""
    ckpt = tmp_path / "scorer"
    ckpt.mkdir()
    (ckpt / "pytorch_model.bin").write_bytes(b"bin weights")
    assert weights_digest(ckpt) is not None and len(weights_digest(ckpt)) == 16
    assert run_provenance("m", {"scorer_dir": str(ckpt)})["scorer_dir_weights"] == weights_digest(ckpt)


def test_a_refusal_names_a_setting_recorded_as_an_empty_block(tmp_path):
    """`_flat` keeps an empty block under its own key, so the refusal still says what differs."""
    assert _flat({"decoding": {}, "model": "m"}) == {"decoding": {}, "model": "m"}
    items = tmp_path / "run.jsonl"
    check_provenance(items, {"model": "m", "extra": {}}, have_rows=False)
    with pytest.raises(ValueError, match=r"extra was \{\}, this run has None"):
        check_provenance(items, {"model": "m"}, have_rows=True)


def test_a_warning_about_many_bad_lines_says_it_lists_only_ten(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join("not json\n" for _ in range(11)) + '{"id": "a"}\n')
    with pytest.warns(UserWarning, match=r"skipped 11 line\(s\) .*\(line\(s\) 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 \.\.\.\)"):
        assert read_items(path) == [{"id": "a"}]


# --- regrade --------------------------------------------------------------------------------


def _adapter(verdict):
    return SimpleNamespace(grader="new", name="t", grade=lambda exs, comps: [verdict(c) for c in comps])


def test_regrade_judges_the_first_row_of_an_id_only_and_counts_the_rows_judged(tmp_path):
    """Of an id written twice only the first row counts, so only it is judged again; rows of items
    outside the draw are left; the return value counts rows judged again, changed or not."""
    path = tmp_path / "r.jsonl"
    rows = [{"id": "a", "completion": "1", "correct": True, "grader": "old"},
            {"id": "b", "completion": "2", "correct": True, "grader": "old"},
            {"id": "a", "completion": "1", "correct": True, "grader": "old"},
            {"id": "z", "completion": "9", "correct": True, "grader": "old"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = read_items(path)
    with pytest.warns(UserWarning, match=r"1 of 2 stored verdict\(s\) changed"):
        assert regrade(path, rows, [SimpleNamespace(id="a"), SimpleNamespace(id="b")], _adapter(lambda c: c == "1")) == 2
    assert [(r["correct"], r["grader"]) for r in read_items(path)] == [(True, "new"), (False, "new"), (True, "old"),
                                                                       (True, "old")]


def test_regrade_is_silent_when_no_verdict_changed(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "a", "completion": "1", "correct": True, "grader": "old"}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert regrade(path, read_items(path), [SimpleNamespace(id="a")], _adapter(lambda c: True)) == 1
    assert read_items(path)[0]["grader"] == "new"


def test_rewriting_refuses_a_file_that_gained_rows(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n')
    with pytest.raises(RuntimeError, match="more rows than were read"):
        rewrite_items(path, [{"id": "a"}])
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


# --- task accuracy --------------------------------------------------------------------------


def test_score_task_reports_pooled_tpf_and_honours_steps(den):
    from depmask.decoding import build_policy
    from depmask.eval.task_accuracy import score_task

    row = score_task(den, den.tokenizer, "sort", build_policy("threshold", threshold=0.5), n=4)
    assert row["nfe"] < 8 and row["tpf"] == pytest.approx(8 / row["nfe"])  # answer length / mean NFE
    row = score_task(den, den.tokenizer, "sort", build_policy("low_confidence"), n=4, steps=2)
    assert row["nfe"] == 2 and row["tpf"] == 4


def test_score_task_refuses_symbols_the_tokenizer_lacks(den):
    from depmask.decoding import build_policy
    from depmask.eval.task_accuracy import score_task
    from depmask.tasks import get_task

    with pytest.raises(ValueError, match=r"uses 4 symbol\(s\) the model's tokenizer does not have"):
        score_task(den, den.tokenizer, get_task("permutation", n_symbols=12), build_policy("low_confidence"), n=2)


def test_decode_task_sums_the_seconds_of_every_batch(den, monkeypatch):
    import depmask.eval.task_accuracy as ta

    real = ta.generate

    def one_second(*args, **kwargs):
        res = real(*args, **kwargs)
        res.seconds = 1.0
        return res

    monkeypatch.setattr(ta, "generate", one_second)
    from depmask.decoding import build_policy

    *_, seconds = ta.decode_task(den, den.tokenizer, "sort", build_policy("low_confidence"), n=6, batch_size=2)
    assert seconds == 3.0


def test_decode_accuracy_decodes_with_the_policy_it_is_given(monkeypatch):
    import depmask.eval.task_accuracy as ta

    seen = []
    monkeypatch.setattr(ta, "HFDenoiser", lambda model, tok: None)
    monkeypatch.setattr(ta, "score_task", lambda den, tok, task, policy, n, seed: seen.append(policy) or {"accuracy": 0.5})
    assert ta.decode_accuracy(None, None, "sort", n=2, policy="threshold") == 0.5
    assert seen[0].name == "threshold"


# --- plots ----------------------------------------------------------------------------------


def _row(policy, acc, tpf, probe=0):
    return {"task": "t", "policy": policy, "accuracy": acc, "tpf": tpf, "afp": tpf * 2, "probe_nfe": probe}


def _zoomed(monkeypatch, rows, **kwargs):
    kept = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: kept.setdefault("fig", fig))
    plots.plot_frontier(rows, "unused.png", **kwargs)
    fig = kept["fig"]
    return fig.axes[1], {line.get_label(): line for line in fig.axes[1].get_lines()
                         if not line.get_label().startswith("_")}


ROWS = [_row("low_confidence", 0.78, 1.0), _row("threshold", 0.79, 3.6), _row("threshold", 0.80, 3.0),
        _row("threshold", 0.50, 6.0), _row("oracle", 0.79, 0.8, probe=16)]


def test_the_frontier_draws_a_probing_policy_dashed_at_its_decoding_tpf_and_sorts_points(monkeypatch):
    _, lines = _zoomed(monkeypatch, ROWS)
    assert set(lines) == {"low_confidence", "threshold", "oracle (decode steps)"}
    assert list(lines["oracle (decode steps)"].get_xdata()) == [1.6]  # its `afp`, not its `tpf` (0.8)
    assert lines["oracle (decode steps)"].get_linestyle() == "--"
    assert lines["threshold"].get_linestyle() == "-" and lines["low_confidence"].get_linestyle() == "-"
    assert list(lines["threshold"].get_xdata()) == [3.0, 3.6, 6.0]  # in TPF order, not row order


def test_the_zoomed_panel_spans_zoom_points_below_the_reference_and_its_runs(monkeypatch):
    ax, _ = _zoomed(monkeypatch, ROWS)
    assert ax.get_ylim()[0] == pytest.approx(78 - 4)
    lo, hi = ax.get_xlim()
    assert lo < 1.6 and 3.6 < hi < 6.0  # the 50 % run is outside the zoom: it does not stretch the axis
    levels = sorted({line.get_ydata()[0] for line in ax.get_lines() if line.get_label().startswith("_")})
    assert levels == pytest.approx([77.0, 78.0])  # the 1-point window and the reference


def test_a_window_below_the_panels_floor_draws_no_line(monkeypatch):
    """Near 0 % accuracy the floor is -1: a 3-point window under a 1.5 % reference lies below it."""
    rows = [_row("low_confidence", 0.015, 1.0), _row("threshold", 0.01, 3.0)]
    ax, _ = _zoomed(monkeypatch, rows, windows=(0.01, 0.03))
    levels = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_label().startswith("_"))
    assert levels == pytest.approx([0.5, 1.5])  # the 1-point window and the reference, nothing at -1.5
