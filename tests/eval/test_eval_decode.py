"""`depmask eval decode`: sweeps, per-item JSONL, resume, summary format, plots, configs."""

import json

import pytest

from depmask.cli import main
from depmask.eval.draws import check_heldout, task_prompts
from depmask.eval.items import read_items, run_slug
from depmask.eval.runner import PolicySweep, run_decode_eval
from depmask.eval.summary import run_key, wilson_interval
from depmask.models import HFDenoiser
from depmask.tasks import get_task
from tests.conftest import EMBEDDED, ROOT

SMALL = ["--model.path", str(EMBEDDED), "--tasks", "[sort, permutation]", "--n", "6", "--batch_size", "4",
         "--policies", "[{name: low_confidence}, {name: threshold, sweep: {threshold: [0.5, 0.9]}}]"]


def test_sweep_expansion_and_errors():
    runs = PolicySweep("threshold", knobs={"x": 1}, sweep={"threshold": [0.5, 0.9], "y": [1, 2]}).expand()
    assert len(runs) == 4 and {"x": 1, "threshold": 0.5, "y": 2} in runs
    assert PolicySweep("low_confidence").expand() == [{}]
    swept_first = PolicySweep("guided", knobs={"rule": "conflict", "threshold": 0.1}, sweep={"threshold": [0.9]}).expand()
    assert swept_first == [{"threshold": 0.9, "rule": "conflict"}] and list(swept_first[0]) == ["threshold", "rule"]
    with pytest.raises(ValueError, match=r"sweep.threshold"):
        PolicySweep("threshold", sweep={"threshold": []}).expand()


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
    assert runs and list(runs[0].glob("*.wandb"))
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


def test_eval_decode_refuses_a_bad_window_before_decoding(tmp_path):
    with pytest.raises(ValueError, match=r"`windows` \(\[0.01, 2.0\]\) has entries outside \[0, 1\]: \[2.0\]"):
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), "--windows", "[0.01, 2]"])
    assert not (tmp_path / "ev").exists()


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


def test_a_label_may_not_take_another_presets_name():
    assert PolicySweep("guided", label="head-conflict").shown == "head-conflict"
    assert PolicySweep("demask", label="demask").shown == "demask"
    with pytest.raises(ValueError, match=r"`label` \('demask'\) must be a non-empty name that is not another preset's"):
        PolicySweep("guided", label="demask")
    with pytest.raises(ValueError, match="`label`"):
        PolicySweep("guided", label="")
    # the headline finds the reference, the oracle and today's decoders by their preset's name: a
    # labelled `threshold` sweep took no part in the best baseline (and was given a headroom share)
    for name in ("low_confidence", "oracle", "threshold", "entropy_bound", "dilated"):
        with pytest.raises(ValueError, match=rf"policy '{name}': `label` \('x'\) is not allowed"):
            PolicySweep(name, label="x")
    assert PolicySweep("threshold", label="threshold").shown == "threshold"


def test_held_out_draw_is_checked_before_the_model_loads(tmp_path, monkeypatch):
    """`--n null --select_n N` on a benchmark: every held-out item is an evaluation item; this was
    found only after the whole evaluation had decoded."""
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(6)))
    kwargs = {"gsm8k": {"path": str(data), "shots": 0}}
    monkeypatch.setattr(HFDenoiser, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(ValueError, match=r"`select_n` \(2\) needs `n`"):
        main(["eval", "decode", "--tasks", "[gsm8k]", "--task_kwargs", json.dumps(kwargs), "--n", "null",
              "--select_n", "2", "--output", str(tmp_path / "o")])
    with pytest.raises(ValueError, match=r"task 'gsm8k': every item of the draw \(split 'test', seed 1\) is an excluded"):
        main(["eval", "decode", "--tasks", "[gsm8k]", "--task_kwargs", json.dumps(kwargs), "--n", "6",
              "--select_n", "2", "--output", str(tmp_path / "o")])
    check_heldout(["gsm8k"], "test", 4, 0, 6, 1, kwargs)  # 2 items left over: fine


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


@pytest.mark.parametrize("args,message", [
    (["--select_n", "-1"], r"`select_n` \(-1\) must be an int >= 0"),
    (["--select_n", "5", "--select_seed", "0"], r"`select_seed` \(0\) must differ from `seed` \(0\)"),
    (["--select_n", "5", "--policies", "[{name: threshold}]"], r"`select_n` needs `low_confidence`"),
    (["--n", "0"], r"`n` \(0\) must be an int >= 1 \(items per task\)"),
    (["--batch_size", "0"], r"`batch_size` \(0\) must be an int >= 1"),
    (["--policies", "[{name: low_confidence}, {name: threshold, sweep: {threshold: [0.5, 1.5]}}]"],
     r"policy sweep 'threshold', run \{'threshold': 1.5\}: `threshold` \(1.5\) must lie in \(0, 1\]"),
    (["--policies", "[{name: entropy_bound, sweep: {tau: [0.5]}}]"],
     r"policy sweep 'entropy_bound', run \{'tau': 0.5\}: policy 'entropy_bound' has no knob 'tau'; its knobs: gamma"),
    # an empty list, or a length of 0, is not "unset": they used to run the defaults
    (["--policies", "[{name: guided, knobs: {scorer: attention}, sweep: {epsilon: [0.1, 0.2]}}, "
      "{name: guided, label: g2, knobs: {scorer: attention}, sweep: {epsilon: [0.2]}}]"],
     r"policy sweep 'g2', run \{'epsilon': 0.2, 'scorer': 'attention'\}: the same run as one of sweep 'guided' \(same preset and knobs"),
    # the reference, the oracle and the baselines are found by name: a label hid them from the headline
    (["--policies", "[{name: low_confidence, label: one-per-step}]"], r"`label` \('one-per-step'\) is not allowed on the reference"),
    (["--tasks", "[]"], r"`tasks` is empty"),
    (["--policies", "[]"], r"`policies` is empty"),
    (["--gen_length", "0"], r"`gen_length` \(0\) must be an int >= 1, or None"),
    (["--steps", "0"], r"`steps` \(0\) must be an int >= 1, or None"),
    (["--temperature", "-0.5"], r"`temperature` \(-0.5\) must be >= 0"),
    # a length that does not fit a task fails before the first run writes anything
    (["--block_length", "3"], r"task 'sort': `block_length` \(3\) must be >= 1 and divide `gen_length` \(8\)"),
    # task names and their arguments, before the model loads (a misspelled name was ignored)
    (["--task_kwargs", "{sorting: {n: 8}}"], r"`task_kwargs` names \['sorting'\], which are not in `tasks`"),
    (["--tasks", "[sort, nosuch]"], r"unknown task 'nosuch'"),
    # these failed only after every run had decoded (the bootstrap), or after the model loaded
    (["--seed", "-1"], r"`seed` \(-1\) must be an int in \[0, 2\*\*32 - 1\]"),
    (["--select_n", "2", "--select_seed", "-3"], r"`select_seed` \(-3\) must be an int"),
    (["--tasks", "[sort, sort]"], r"names \['sort'\] more than once"),
    (["--split", "validation"], r"`split` \('validation'\) must be one of train, test"),
])
def test_eval_decode_refuses_bad_settings_before_decoding(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), *args])
    assert not (tmp_path / "ev").exists()
    with pytest.raises(ValueError, match=message):  # before the model loads: a missing one is not the error
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), *args, "--model.path", str(tmp_path / "none")])


def test_a_benchmark_without_its_data_is_named_before_the_model_loads(tmp_path):
    """`configs/eval/gsm8k-llada.yaml`'s first-run error came after LLaDA-8B had loaded."""
    from depmask.tasks.benchmarks import DataNotFoundError

    with pytest.raises(DataNotFoundError, match=r"no 'gsm8k' data for split 'test'"):
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), "--tasks", "[gsm8k]", "--n", "2",
              "--task_kwargs", "{gsm8k: {path: /nonexistent/gsm8k.jsonl}}", "--model.path", str(tmp_path / "none")])


def test_a_benchmark_length_given_twice_must_agree_before_the_model_loads(tmp_path):
    """The shipped real-model configs set `gen_length: 256` for every task, so `--task_kwargs
    "{gsm8k: {gen_length: 16}}"` was dropped silently (and recorded among the task's arguments)."""
    data = tmp_path / "gsm8k.jsonl"
    data.write_text('{"question": "1 + 1?", "answer": "2\\n#### 2"}\n')
    base = ["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), "--tasks", "[gsm8k]", "--n", "1",
            "--model.path", str(tmp_path / "none")]
    with pytest.raises(ValueError, match=r"task 'gsm8k': `gen_length` is 16 in its `task_kwargs` but 256 for every "
                                         r"task \(`gen_length`\)"):
        main([*base, "--gen_length", "256", "--task_kwargs",
              f"{{gsm8k: {{path: {data}, gen_length: 16, block_length: 8}}}}"])
    with pytest.raises(ValueError, match=r"`block_length` is 8 in its `task_kwargs` but 32"):
        main([*base, "--block_length", "32", "--task_kwargs", f"{{gsm8k: {{path: {data}, block_length: 8}}}}"])


def test_excluded_prompts_leave_the_draw(tmp_path):
    from depmask.models import HFDenoiser

    den = HFDenoiser.from_pretrained(EMBEDDED)
    drawn = task_prompts(["sort"], "test", 4, 0)["sort"]
    keep = sorted(drawn)[0]
    rows = run_decode_eval(den, ["sort"], [PolicySweep("low_confidence")], tmp_path / "a", n=4,
                           exclude={"sort": drawn - {keep}})
    assert rows[0]["n"] == 1
    with pytest.raises(ValueError, match=r"task 'sort': every item of the draw \(split 'test', seed 0\) is an excluded"):
        run_decode_eval(den, ["sort"], [PolicySweep("low_confidence")], tmp_path / "b", n=4, exclude={"sort": drawn})
    with pytest.raises(ValueError, match=r"`n` \(0\) must be an int >= 1"):
        run_decode_eval(den, ["sort"], [PolicySweep("low_confidence")], tmp_path / "c", n=0)
    assert not (tmp_path / "c").exists()


def test_sampled_batches_draw_their_own_noise(tmp_path):
    """At temperature > 0 each batch seeds its sampler from (seed, its first item): two batches
    holding the same prompt sample it independently (one seed for all batches gave row 0 of
    every batch the same noise, so they always agreed), and the same run again samples the same."""
    from dataclasses import replace

    from depmask.decoding import batch_seed
    from depmask.eval.runner import run_one
    from depmask.models import HFDenoiser
    from depmask.tasks.adapter import TaskAdapter

    den = HFDenoiser.from_pretrained(EMBEDDED)
    adapter = TaskAdapter.build("permutation")
    ex = adapter.examples("test", 1, 0)[0]
    copies = [replace(ex, id=f"copy-{i}") for i in range(6)]  # one prompt, six batches of one

    def completions(name):
        run_one(den, adapter, "low_confidence", {}, copies, tmp_path / f"{name}.jsonl", batch_size=1,
                temperature=3.0, gen_length=6, block_length=6, steps=6, seed=0)
        return [r["completion"] for r in read_items(tmp_path / f"{name}.jsonl")]

    first = completions("a")
    assert len(set(first)) > 1, first
    assert completions("b") == first
    assert batch_seed(0, "copy-0") != batch_seed(0, "copy-1") != batch_seed(1, "copy-1")
    assert 0 <= batch_seed(0, "copy-0") < 2**63


def test_another_gen_length_keeps_the_tasks_block(tmp_path):
    """`--gen_length` alone keeps the task's block, as documented (it used to switch to one block
    of gen_length, so semi-autoregressive decoding silently became a single block); a gen_length
    the block does not divide is refused, pointing at `--block_length`."""
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": "Sam has 3 pens.", "answer": "#### 3"}) + "\n")
    task_kwargs = {"gsm8k": {"path": str(data), "shots": 0, "block_length": 16}}  # its own gen_length: 256
    from depmask.models import HFDenoiser

    den = HFDenoiser.from_pretrained(EMBEDDED)
    run_decode_eval(den, ["gsm8k"], [PolicySweep("low_confidence")], tmp_path / "a", n=1, gen_length=32,
                    task_kwargs=task_kwargs)
    (run,) = json.loads((tmp_path / "a" / "runs.json").read_text()).values()
    assert (run["gen_length"], run["block_length"]) == (32, 16)
    with pytest.raises(ValueError, match=r"task 'gsm8k': `block_length` \(16\) must be >= 1 and divide "
                                         r"`gen_length` \(40\) \(the task's block; give --block_length"):
        run_decode_eval(den, ["gsm8k"], [PolicySweep("low_confidence")], tmp_path / "b", n=1, gen_length=40,
                        task_kwargs=task_kwargs)


def test_mbpps_few_shot_split_is_named_before_the_model_loads(tmp_path):
    """3-shot MBPP prompts read the `prompt` split, which a folder holding only the test problems lacks."""
    from depmask.tasks.benchmarks import DataNotFoundError

    data = tmp_path / "mbpp"
    data.mkdir()
    rows = [{"task_id": t, "text": f"Return {t}.", "code": f"def f():\n    return {t}",
             "test_list": [f"assert f() == {t}"], "test_setup_code": "", "challenge_test_list": []} for t in (11, 12)]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataNotFoundError, match=r"prompt"):
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), "--tasks", "[mbpp]", "--n", "2",
              "--task_kwargs", f"{{mbpp: {{path: {data}}}}}", "--model.path", str(tmp_path / "none")])


def test_random_remasking_is_seeded_at_temperature_zero(tmp_path):
    # `random` draws its positions from the decode's generator; at T = 0 none was made and the
    # draw came from torch's global generator: two runs of one command decoded differently
    import torch

    from depmask.eval.items import read_items
    from depmask.models import HFDenoiser

    den = HFDenoiser.from_pretrained(EMBEDDED)
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        torch.manual_seed(len(runs) + 100)  # whatever the global generator holds
        run_decode_eval(den, ["sort"], [PolicySweep("random")], tmp_path / name, n=6, batch_size=3, seed=seed)
        (path,) = (tmp_path / name / "items" / "sort").glob("*.jsonl")
        runs.append({r["id"]: r["commit_step"] for r in read_items(path)})
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]  # the seed decides the draw


def test_task_accuracy_names_bad_arguments_and_takes_a_task_name():
    from depmask.decoding import build_policy
    from depmask.eval.task_accuracy import score_task
    from depmask.models import HFDenoiser

    den = HFDenoiser.from_pretrained(EMBEDDED)
    for kwargs, message in (({"n": 0}, r"`n` \(0\) must be an int >= 1"),
                            ({"n": 2, "batch_size": 0}, r"`batch_size` \(0\) must be an int >= 1")):
        with pytest.raises(ValueError, match=message):
            score_task(den, den.tokenizer, "sort", build_policy("low_confidence"), **kwargs)
    row = score_task(den, den.tokenizer, "sort", build_policy("low_confidence"), n=2)
    assert row["n"] == 2 and 0 <= row["accuracy"] <= 1


def test_benchmark_items_are_batched_by_prompt_length(tmp_path, monkeypatch):
    # in draw order, one long prompt padded a whole batch of short ones; sorted, rows of a batch
    # have close lengths (synthetic tasks, all of one length, keep the draw's order)
    import depmask.eval.runner as runner
    from depmask.models import HFDenoiser

    data = tmp_path / "gsm8k.jsonl"
    questions = ["Sam has 3 pens. " * k for k in (1, 6, 2, 5, 3, 4)]
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 3"}) + "\n" for q in questions))
    widths = []
    real = runner.generate

    def spy(den, prompts, policy, **kwargs):
        widths.append([len(p) for p in prompts])
        return real(den, prompts, policy, **kwargs)

    monkeypatch.setattr(runner, "generate", spy)
    den = HFDenoiser.from_pretrained(EMBEDDED)
    rows = run_decode_eval(den, ["gsm8k"], [PolicySweep("low_confidence")], tmp_path / "a", n=6, batch_size=2,
                           task_kwargs={"gsm8k": {"path": str(data), "shots": 0, "gen_length": 16,
                                                  "block_length": 16}})
    assert rows[0]["n"] == 6 and len(widths) == 3
    flat = [w for batch in widths for w in batch]
    assert flat == sorted(flat)


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


def test_results_decoded_from_other_prompts_are_not_reused(tmp_path):
    """A benchmark's ids are record indices: after its data file changed at the same path, the old
    completions were reused and graded against the old answers."""
    data = tmp_path / "gsm.jsonl"

    def write(offset):
        data.write_text("".join(json.dumps({"question": f"{i + offset} + 1?", "answer": f"#### {i + offset + 1}"}) + "\n"
                                for i in range(3)))

    args = ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[gsm8k]", "--n", "3", "--gen_length", "8", "--block_length", "8",
            "--task_kwargs", json.dumps({"gsm8k": {"path": str(data), "shots": 0}}), "--bootstrap", "0",
            "--policies", "[{name: low_confidence}]", "--output", str(tmp_path / "ev")]
    write(0)
    main(args)
    main(args)  # the same data: resumed
    write(10)
    with pytest.raises(ValueError, match=r"holds results for 3 item\(s\) .* whose prompt or answer is not what it is now"):
        main(args)


def test_a_bad_line_inside_a_results_file_costs_only_itself(tmp_path):
    """`read_items` stopped at the first unparsable line anywhere and cut the file there: every
    complete row after it was deleted without a word and decoded again."""
    import json

    from depmask.eval.items import read_items

    path = tmp_path / "r.jsonl"
    rows = [{"id": f"t:{i}", "correct": True} for i in range(5)]
    lines = [json.dumps(r) + "\n" for r in rows]
    lines[1] = '{"id": "t:1", "corr' + lines[2]  # a torn line that the next append continued
    del lines[2]
    path.write_text("".join(lines) + '{"id": "t:5"')  # and a torn last line
    with pytest.warns(UserWarning, match=r"r\.jsonl: skipped 1 line\(s\) that are not JSON rows \(line\(s\) 2\)"):
        got = read_items(path)
    assert [r["id"] for r in got] == ["t:0", "t:3", "t:4"]
    assert path.read_text().endswith(json.dumps(rows[4]) + "\n")  # the complete rows stay; the torn tail is cut
