"""`depmask eval decode`: sweeps, per-item JSONL, resume, summary format, plots, configs."""

import json

import pytest

from depmask.cli import main
from depmask.eval.items import read_items, run_slug
from depmask.eval.runner import PolicySweep, run_decode_eval
from depmask.eval.summary import run_key, wilson_interval
from depmask.models import HFDenoiser
from depmask.tasks import get_task
from tests.conftest import EMBEDDED, ROOT
from tests.eval.decode_args import SMALL


def test_wilson_interval():
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 0.85
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and abs((hi - lo) - 0.19) < 0.01


def _strict(text: str):
    """Standard JSON only: Python's `json` would read the non-standard `NaN` other tools refuse."""
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=refuse)


def test_eval_decode_writes_items_summary_plot_and_resumes(tmp_path, capsys):
    out = tmp_path / "ev"
    main(["eval", "decode", *SMALL, "--output", str(out)])
    rows = _strict((out / "summary.json").read_text())
    # sort at τ 0.5 decodes every item in one forward: its rank correlation is undefined, null
    assert any(r["kendall_tau"] is None for r in rows if r["task"] == "sort")
    assert "nan" not in (out / "summary.csv").read_text().lower()
    assert len(rows) == 6  # 2 tasks × 3 runs
    for r in rows:
        for key in ("task", "policy", "accuracy", "accuracy_lo", "accuracy_hi", "nfe", "tpf", "afp", "tpf_pooled",
                    "decode_tpf_pooled", "tokens_per_s", "n"):
            assert key in r, key
        assert r["n"] == 6 and r["accuracy_lo"] <= r["accuracy"] <= r["accuracy_hi"]
    low = next(r for r in rows if r["task"] == "permutation" and r["policy"] == "low_confidence")
    assert low["nfe"] == 6 and low["tpf"] == 1.0
    assert {r.get("threshold") for r in rows if r["policy"] == "threshold"} == {0.5, 0.9}
    assert (out / "frontier.png").stat().st_size > 1000 and (out / "summary.csv").is_file()
    assert (out / "frontier-pooled.png").stat().st_size > 1000
    top = _strict((out / "headline.json").read_text())
    assert {r["measure"] for r in top} == {"tpf", "tpf_pooled"}
    ci = _strict((out / "headline_ci.json").read_text())
    assert {(r["task"], r["policy"], r["measure"]) for r in ci} == {(r["task"], r["policy"], r["measure"]) for r in top}
    for r in ci:  # the bootstrap's point value is the headline's (no probing policy here)
        same = next(t for t in top if (t["task"], t["policy"], t["measure"]) == (r["task"], r["policy"], r["measure"]))
        assert r["tpf"] == pytest.approx(same["tpf"]) if same["tpf"] is not None else r["tpf"] is None
        assert r["n_boot"] == 1000
    table = capsys.readouterr().out
    assert "accuracy (95% CI)" in table and "bootstrap intervals" in table

    items = out / "items" / "sort" / f"{run_slug('threshold', {'threshold': 0.5})}.jsonl"
    first = read_items(items)
    assert len(first) == 6 and {"id", "completion", "correct", "nfe", "commit_step"} <= set(first[0])
    run = next(r for r in rows if r["task"] == "sort" and r.get("threshold") == 0.5)
    assert run["tpf_pooled"] == pytest.approx(sum(i["committed"] for i in first) / sum(i["nfe"] for i in first))
    # interrupt: drop two rows and tear the last line, then run again, and compare whole rows but
    # for the timing, on a run whose forwards tell its policy apart (sort at τ 0.9 decodes in one
    # forward, one token per step in eight)
    items = out / "items" / "sort" / f"{run_slug('threshold', {'threshold': 0.9})}.jsonl"
    first = read_items(items)
    assert all(r["nfe"] < 8 for r in first)
    lines = items.read_text().splitlines(keepends=True)
    items.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    main(["eval", "decode", *SMALL, "--output", str(out)])
    again = read_items(items)

    def untimed(r):
        return {k: v for k, v in r.items() if k != "seconds"}

    assert [untimed(r) for r in again] == [untimed(r) for r in first]
    resumed = json.loads((out / "summary.json").read_text())
    timing = {"tokens_per_s", "seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed] == \
        [{k: v for k, v in r.items() if k not in timing} for r in rows]


def _decode_configs():
    """The `eval decode` configs (each names its command on its first line)."""
    return [p for p in sorted((ROOT / "configs" / "eval").glob("*.yaml"))
            if "depmask eval decode" in p.read_text().splitlines()[0]]


@pytest.mark.parametrize("path", _decode_configs(), ids=lambda p: p.name)
def test_shipped_eval_configs_parse(path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "decode", "--config", str(path), "--print_config"])
    assert e.value.code in (0, None)
    import yaml

    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["tasks"] and cfg["policies"] and cfg["model"]["path"]
    from depmask.decoding.policies import POLICIES

    assert all(p["name"] in POLICIES for p in cfg["policies"])
    sweeps = [PolicySweep(**p) for p in cfg["policies"]]  # labels are checked here
    assert len({s.shown for s in sweeps}) == len(sweeps)  # every sweep keeps its own name in the headline
    if (ROOT / cfg["model"]["path"]).is_dir():  # shipped model and head: every run's policy builds
        from depmask.decoding import build_policy

        for sweep in sweeps:
            for knobs in sweep.expand():
                build_policy(sweep.name, **{k: str(ROOT / v) if k == "head" else v for k, v in knobs.items()})


def test_benchmark_config_runs_with_a_local_model_path(tmp_path):
    """`configs/eval/gsm8k-llada.yaml` with `--model.path` pointed elsewhere: the real-model route.

    The embedded model stands in for LLaDA (its tokenizer turns GSM8K words into [UNK], so the
    answers are wrong); what is checked is the path: config, model override, local data, decode,
    extraction, grading, summary.
    """
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"question": f"Sam has {i} pens. How many?", "answer": f"#### {i}"}) + "\n"
                            for i in range(3)))
    out = tmp_path / "ev"
    main(["eval", "decode", "--config", str(ROOT / "configs" / "eval" / "gsm8k-llada.yaml"),
          "--model.path", str(EMBEDDED), "--model.mask_id", "2", "--model.device", "cpu", "--model.dtype", "float32",
          "--model.capture_layers", "[3]", "--task_kwargs", json.dumps({"gsm8k": {"path": str(data), "shots": 0}}),
          "--n", "3", "--gen_length", "16", "--block_length", "8", "--output", str(out),
          "--policies", "[{name: low_confidence}, {name: threshold, sweep: {threshold: [0.9]}}]"])
    rows = json.loads((out / "summary.json").read_text())
    assert [(r["task"], r["policy"], r["n"]) for r in rows] == [("gsm8k", "low_confidence", 3), ("gsm8k", "threshold", 3)]
    assert rows[0]["nfe"] == 16 and rows[0]["accuracy"] == 0.0


def test_wandb_logging_is_offline_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    import wandb

    inits, logged = [], []
    real_init = wandb.init

    def init(*args, **kwargs):  # the real run, with what it is given kept for the assertions below
        inits.append(kwargs)
        run = real_init(*args, **kwargs)
        real_log = run.log
        run.log = lambda data, *a, **k: (logged.append(sorted(data)), real_log(data, *a, **k))[1]
        return run

    monkeypatch.setattr(wandb, "init", init)
    out = tmp_path / "ev"
    main(["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "4", "--output", str(out),
          "--policies", "[{name: low_confidence}, {name: threshold, sweep: {threshold: [0.9]}}]", "--wandb", "true"])
    import os

    assert os.environ["WANDB_MODE"] == "offline"
    runs = list(out.rglob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))  # no log: `init` had returned another, still active run
    # the run's config holds the evaluation's settings (it held only the output directory)
    (config,) = [kw["config"] for kw in inits]
    assert config["model_fingerprint"].startswith("tiny-tasks@") and config["tasks"] == ["sort"]
    assert [p["name"] for p in config["policies"]] == ["low_confidence", "threshold"] and config["windows"]
    assert logged == [["frontier", "frontier-pooled", "headline", "summary"]]


def test_eval_decode_reports_every_accuracy_window(tmp_path, capsys):
    out = tmp_path / "ev"
    main(["eval", "decode", *SMALL, "--output", str(out), "--windows", "[0.01, 0.5, 0]", "--bootstrap", "50"])
    top = json.loads((out / "headline.json").read_text())
    ci = json.loads((out / "headline_ci.json").read_text())
    for rows in (top, ci):
        assert {(r["tolerance"], r["measure"]) for r in rows} == {(w, m) for w in (0.01, 0.5, 0) for m in ("tpf", "tpf_pooled")}
    printed = capsys.readouterr().out
    assert "(within 1 point)" in printed and "(within 50 points)" in printed and "(with no loss)" in printed
    assert "Headline (no loss) with 95% bootstrap intervals" in printed
    # a window can only admit more runs as it widens
    best = {(r["task"], r["policy"], r["measure"], r["tolerance"]): r["tpf"] for r in top}
    for (task, policy, measure, w), tpf in best.items():
        if w == 0 and tpf is not None:
            assert best[(task, policy, measure, 0.5)] >= tpf


def test_labels_keep_guided_crossings_apart(tmp_path):
    out = tmp_path / "ev"
    policies = ("[{name: low_confidence}, "
                "{name: guided, label: attention-budget, knobs: {rule: budget, scorer: attention}, sweep: {epsilon: [0.1]}}, "
                "{name: guided, label: attention-conflict, knobs: {rule: conflict, scorer: attention}, sweep: {threshold: [0.9]}}]")
    main(["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[permutation]", "--n", "4", "--bootstrap", "0",
          "--policies", policies, "--output", str(out)])
    rows = json.loads((out / "summary.json").read_text())
    assert [r["policy"] for r in rows] == ["low_confidence", "attention-budget", "attention-conflict"]
    top = json.loads((out / "headline.json").read_text())
    assert {r["policy"] for r in top} == {"low_confidence", "attention-budget", "attention-conflict"}
    runs = json.loads((out / "runs.json").read_text())
    assert {v["label"] for v in runs.values()} == {"low_confidence", "attention-budget", "attention-conflict"}
    assert {v["policy"] for v in runs.values()} == {"low_confidence", "guided"}


def test_eval_decode_chooses_knobs_on_held_out_items(tmp_path, capsys):
    out = tmp_path / "ev"
    main(["eval", "decode", *SMALL, "--output", str(out), "--bootstrap", "50", "--select_n", "5"])
    rows = json.loads((out / "summary.json").read_text())
    chosen = json.loads((out / "select" / "summary.json").read_text())
    assert len(chosen) == len(rows) == 6 and all(r["n"] == 6 for r in rows)
    assert all(1 <= r["n"] <= 5 for r in chosen)  # held-out items repeating an evaluation prompt are dropped
    for task in ("sort", "permutation"):  # the two draws (seed 0, and seed 1 by default) share no prompt
        prompt_of = {e.id: e.prompt for seed, n in ((0, 6), (1, 5)) for e in get_task(task).examples("test", n, seed=seed)}
        slug = f"{run_slug('low_confidence', {})}.jsonl"
        evaluated = {prompt_of[i["id"]] for i in read_items(out / "items" / task / slug)}
        held_out = {prompt_of[i["id"]] for i in read_items(out / "select" / "items" / task / slug)}
        assert len(evaluated) >= 5 and held_out and evaluated.isdisjoint(held_out)
    held = json.loads((out / "headline_heldout.json").read_text())
    assert {(r["task"], r["policy"], r["measure"]) for r in held} == {
        (t, p, m) for t in ("sort", "permutation") for p in ("low_confidence", "threshold") for m in ("tpf", "tpf_pooled")}
    for r in held:  # scored on the evaluation run with the knob chosen on the held-out one
        if r["accuracy"] is None:
            continue
        same = next(x for x in rows if x["task"] == r["task"] and x["policy"] == r["policy"]
                    and x.get("threshold") == (float(r["knobs"].split("=")[1]) if r["knobs"] else None))
        assert r["tpf"] == same[r["measure"]] and r["accuracy"] == same["accuracy"]
    ci = json.loads((out / "headline_heldout_ci.json").read_text())
    assert {(r["task"], r["policy"], r["measure"]) for r in ci} == {(r["task"], r["policy"], r["measure"]) for r in held}
    assert all(r["n_boot"] == 50 and 0 <= r["within_rate"] <= 1 for r in ci)
    printed = capsys.readouterr().out
    assert "chosen on held-out items" in printed and "bootstrap over both item sets" in printed
    # again into the same directory, without the held-out choice or the bootstrap: the files of those
    # were of the first invocation's runs and items, and go
    main(["eval", "decode", *SMALL, "--output", str(out), "--bootstrap", "0"])
    left = {p.name for p in out.glob("headline*.json")}
    assert left == {"headline.json"} and not (out / "select" / "summary.json").exists()


def test_numpy_and_path_knobs_stay_in_the_summary_rows(tmp_path):
    """A Python-built sweep may hold NumPy scalars (the policies accept them) and a head as a
    `Path`: the rows dropped them, so every run of the sweep had the same run key and the held-out
    headline scored a different run than it chose."""
    import numpy as np

    den = HFDenoiser.from_pretrained(str(EMBEDDED))
    sweeps = [PolicySweep("dilated", sweep={"base": list(np.array([2, 4]))}),
              PolicySweep("threshold", sweep={"threshold": [np.float32(0.5)]})]
    rows = run_decode_eval(den, ["sort"], sweeps, tmp_path / "a", n=2, batch_size=2)
    assert [r.get("base") for r in rows[:2]] == [2, 4] and type(rows[0]["base"]) is int
    assert rows[2]["threshold"] == 0.5 and type(rows[2]["threshold"]) is float
    assert len({run_key(r) for r in rows}) == 3
    runs = json.loads((tmp_path / "a" / "runs.json").read_text())  # numbers, not "2" (default=str)
    assert sorted(v["knobs"].get("base", 0) for v in runs.values()) == [0, 2, 4]
    from depmask.eval.runner import _plain

    assert _plain({"head": tmp_path / "h", "x": [1]}) == {"head": str(tmp_path / "h")}


def test_a_numpy_knob_names_the_run_its_value_does():
    """`np.int64(2)` was hashed as the text "2": a NumPy-built sweep decoded again into another file
    instead of resuming, and `[2, np.int64(2)]` was not caught as the same run twice."""
    import numpy as np

    from depmask.eval.runner import check_policies

    assert run_slug("dilated", {"base": np.int64(2)}) == run_slug("dilated", {"base": 2})
    assert run_slug("threshold", {"threshold": np.float64(0.5)}) == run_slug("threshold", {"threshold": 0.5})
    with pytest.raises(ValueError, match=r"the same run as one of sweep 'dilated'"):
        check_policies([PolicySweep("dilated", sweep={"base": [2, np.int64(2)]})])


def test_eval_wandb_logs_to_a_run_of_its_own_beside_an_active_one(tmp_path, monkeypatch):
    """`wandb.init` returns a run still active in the process by default: after a Lightning fit with
    the wandb logger in the same session (in CI, the MDLM logger test before this one on its xdist
    worker), the evaluation's table went into that run, and its own directory got no log."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    import wandb

    active = wandb.init(project="depmask", dir=str(tmp_path / "other"), job_type="fit")
    try:
        main(["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "2", "--output",
              str(tmp_path / "ev"), "--policies", "[{name: low_confidence}]", "--bootstrap", "0", "--wandb", "true"])
        (run,) = (tmp_path / "ev").rglob("offline-run-*")
        assert list(run.glob("*.wandb")) and run.name.split("-")[-1] != active.id
    finally:
        active.finish()
