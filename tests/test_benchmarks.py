"""The README's benchmark command runs and writes its JSON (a tiny setting; no timing asserted)."""

import json
import math
import subprocess
import sys

import pytest
import torch

from depmask.decoding import build_policy, generate
from tests.conftest import EMBEDDED, ROOT
from tests.decoding.mock import MockDenoiser


def test_decode_overhead_benchmark_runs(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "decode_overhead.py"), "--batch", "2", "--prompt_length", "4",
         "--gen_length", "8", "--block_length", "8", "--repeats", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(out.read_text())
    assert row["forwards"] >= 1 and row["ratio"] > 0 and row["params"] > 1_000_000
    assert row["forwards"] <= row["rows_forwarded"] <= 2 * row["forwards"]  # the decode's own rows, replayed
    assert "ratio" in done.stdout


def test_harvest_throughput_benchmark_runs(tmp_path):
    out = tmp_path / "harvest.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "harvest_throughput.py"), "--examples", "4", "--batch_size", "4",
         "--repeats", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(out.read_text())
    assert row["states"] == 4 * 16 and row["perturbed_forwards"] >= 1 and row["ratio"] > 0
    assert "pairs/s" in done.stdout


@pytest.mark.parametrize("compile_args", [[], ["--compile", "aot"]], ids=["eager", "aot"])
def test_selection_overhead_benchmark_runs(tmp_path, compile_args):
    """The README's two commands (eager, and `--compile aot`), at batch 2 and one repeat."""
    out = tmp_path / "sel.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "selection_overhead.py"), "--batch", "2", "--repeats", "1",
         "--decode_repeats", "3", "--threads", "1", "--head", str(ROOT / "models" / "tiny-tasks-head"), *compile_args, "--out", str(out)],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "ratio" in done.stdout
    rows = {r["policy"]: r for r in json.loads(out.read_text())}
    assert all(r["compile_mode"] == (compile_args[1] if compile_args else None) for r in rows.values())
    # the trained head does real matmuls; CLAD's selection only a small cluster-affinity product
    assert rows["demask"]["flops_ratio"] > rows["clad"]["flops_ratio"] > 0
    # timed where the loop runs it (after the forward and step_state) and right after the forward
    assert all(r["select_ms"] > 0 and r["select_after_forward_ms"] > 0 for r in rows.values())
    assert all(math.isfinite(r["decode_added_ms"]) and math.isfinite(r["decode_ratio"]) for r in rows.values())
    # the paired median of the whole-decode differences lies in its bootstrap interval
    assert all(r["decode_ratio_ci"][0] <= r["decode_ratio"] <= r["decode_ratio_ci"][1] for r in rows.values())
    assert all(r["decode_repeats"] == 3 for r in rows.values())
    # against a step as a decode runs it (the replayed decode's time per step)
    for r in rows.values():
        assert r["decode_step_ms"] > 0
        assert r["ratio_in_decode"] == pytest.approx(r["select_ms"] / r["decode_step_ms"])
        assert r["decode_ratio_in_decode"] == pytest.approx(r["decode_added_ms"] / r["decode_step_ms"])
        # the select calls timed inside the decodes, and what the policy adds elsewhere
        assert r["select_in_decode_ms"] > 0
        assert r["decode_rest_ms"] == pytest.approx(r["decode_added_ms"] - r["select_in_decode_ms"])


def test_replay_reproduces_the_recorded_decode():
    """`decode_added_ms` subtracts a decode that replays the policy's recorded commits: it must be
    the same decode (same tokens, commit steps, forwards) without the policy's work."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from decode_replay import Recorder, Replay
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    prompts = [[1, 2, 3], [4, 5, 6]]
    rec = Recorder(build_policy("clad", threshold=0.5))
    mock_denoiser = MockDenoiser()
    first = generate(mock_denoiser, prompts, rec, gen_length=8)
    replay = Replay(rec.inner, rec.commits)
    assert replay.needs_attention and not replay.needs_hidden  # the same forwards, captures included

    def no_work(state):  # the policy's own selection must not run: it is what the replay leaves out
        raise AssertionError("the replay ran the policy's select")

    rec.inner.select = no_work
    for _ in range(2):  # replays from its first step each time
        again = generate(mock_denoiser, prompts, replay, gen_length=8)
        assert torch.equal(again.tokens, first.tokens) and torch.equal(again.commit_step, first.commit_step)
        assert again.forwards == first.forwards == len(rec.commits) and replay.step == len(rec.commits)


def test_timing_decodes_as_the_policy_and_times_every_select():
    """`select_in_decode_ms` times the policy's select calls inside `generate()`: the wrapper must
    decode exactly as the policy does (its bind included) and time each of its steps."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from decode_replay import Timing
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    prompts = [[1, 2, 3], [4, 5, 6]]
    policy = build_policy("clad", threshold=0.5)
    den = MockDenoiser()
    first = generate(den, prompts, policy, gen_length=8)
    timing = Timing(policy, policy.select, den.device)
    assert timing.needs_attention and not timing.needs_hidden
    again = generate(den, prompts, timing, gen_length=8)
    assert torch.equal(again.tokens, first.tokens) and torch.equal(again.commit_step, first.commit_step)
    assert len(timing.seconds) == again.forwards == first.forwards and all(t > 0 for t in timing.seconds)


@pytest.mark.parametrize("mode", ["jit", "aot"])
def test_selection_overhead_simulate_mode_runs_on_cpu_compiled(tmp_path, mode):
    """The LLaDA-shape mode (meant for a GPU) at toy sizes: same code path, random tensors; with
    `--compile jit` / `aot` (the embedded test above covers the eager timing)."""
    out = tmp_path / "sim.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "selection_overhead.py"), "--simulate", "llada", "--device", "cpu",
         "--sim_length", "32", "--sim_gen", "16", "--sim_block", "8", "--sim_hidden", "64", "--sim_heads", "2",
         "--sim_layers", "1", "--sim_intermediate", "64", "--sim_vocab", "100", "--sim_steps", "2", "--repeats", "1",
         "--threads", "1", "--compile", mode, "--out", str(out)],
        capture_output=True, text=True, timeout=500, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [r["policy"] for r in rows] == ["demask", "clad"]
    assert all(r["compiled"] and r["compile_s"] > 0 and r["compile_mode"] == mode for r in rows)
    assert f"compiled ({mode})," in done.stdout
    assert all(r["mode"] == "simulate-llada" and r["forward_ms"] > 0 and r["select_ms"] > 0 for r in rows)
    assert all(r["flops_ratio"] > 0 for r in rows)  # toy sizes: the default head outweighs the toy model


def test_the_gpu_check_script_runs_its_steps_and_reports_failures(tmp_path):
    """`benchmarks/gpu_checks.sh` is what a session lent a GPU runs; here its smoke mode (CPU,
    tiny shapes, no compiling) checks the plumbing: every step runs, a log and the benchmarks'
    JSON land in $OUT, and a failing step makes the exit status 1 without stopping the others."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SMOKE": "1", "OUT": str(tmp_path / "ok"),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    log = (tmp_path / "ok" / "gpu_checks.log").read_text()
    assert done.returncode == 0, log
    assert log.count(": ok (") == 2 and "every step ok" in log and "FAILED" not in log
    rows = json.loads((tmp_path / "ok" / "selection_overhead_llada.json").read_text())
    assert [r["policy"] for r in rows] == ["demask", "clad"] and all(r["ratio"] > 0 for r in rows)
    bad = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh")], cwd=ROOT,
                         env={**env, "OUT": str(tmp_path / "bad"), "PYTHON": "false"},
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "bad" / "gpu_checks.log").read_text()
    assert bad.returncode == 1 and log.count(": FAILED (exit 1") == 2 and "some step FAILED" in log


def test_the_gpu_check_scripts_limits_fit_its_one_device_call():
    """The steps' limits (710 s) once exceeded the 560 s call the script's header recommends and
    the device tool's 600 s maximum: a slow but passing run would lose its last steps."""
    import re

    script = (ROOT / "benchmarks" / "gpu_checks.sh").read_text()
    limits = [int(x) for x in re.findall(r'^\s*step "[^"]+" (\d+) ', script, flags=re.M)]
    call = int(re.search(r"timeout_s=(\d+)", script).group(1))
    assert len(limits) == 4 and sum(limits) + 40 <= call <= 600, (limits, call)


def test_head_tradeoff_reads_an_eval_times_its_head_and_refuses_a_retrained_one(tmp_path):
    """`benchmarks/head_tradeoff.py` on a tiny `eval decode` output (permutation, 4 items): the point is
    the best `demask` run within the window, its head is the one the run names and is timed, the
    share of the oracle's headroom is computed from the reference lines; a head whose weights
    changed since the eval is refused."""
    from depmask.cli import main as cli
    from depmask.models import HFDenoiser
    from depmask.predictor import DependencyHead
    from tests.conftest import EMBEDDED

    den = HFDenoiser.from_pretrained(EMBEDDED)
    head = tmp_path / "head"

    def export(seed):
        torch.manual_seed(seed)
        DependencyHead(den.hidden_size, dim=16, layers=0, heads=2, base_fingerprint=den.fingerprint).save_pretrained(
            head)

    export(0)
    ev = tmp_path / "ev"
    policies = ("[{name: low_confidence}, {name: threshold, sweep: {threshold: [0.5, 0.9]}}, "
                "{name: oracle, sweep: {epsilon: [0.5]}}, "
                f"{{name: demask, knobs: {{head: {head}}}, sweep: {{epsilon: [0.05, 0.5]}}}}, "
                f"{{name: guided, label: head-cluster, knobs: {{units: cluster, rule: budget, scorer: head, head: {head}}}, "
                "sweep: {threshold: [0.5, 0.9], epsilon: [0.5]}}]")
    # permutation: the oracle's decoding TPF (1.26) beats the best confidence rule's (1.20), so the
    # share of the headroom is defined (on sort both decode every item in one forward)
    cli(["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[permutation]", "--n", "4", "--batch_size", "4",
         "--bootstrap", "0", "--policies", policies, "--output", str(ev)])
    out, png = tmp_path / "tradeoff.json", tmp_path / "tradeoff.png"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "head_tradeoff.py"), "--model", str(EMBEDDED), "--task", "permutation",
           "--reference", str(ev), "--point", "tiny", str(ev), "demask", "--point", "cross", str(ev), "head-cluster",
           "--window", "1.0", "--batch", "2",
           "--repeats", "1", "--compile", "none", "--out", str(out), "--plot", str(png)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rows = [r for r in json.loads((ev / "summary.json").read_text()) if r["policy"] == "demask"]
    best = max(rows, key=lambda r: r["tpf_pooled"])  # a 100-point window admits every run
    point, cross = report["points"]
    assert point["head"] == str(head) and point["epsilon"] == best["epsilon"]
    assert point["timed"] == {"preset": "demask", "epsilon": best["epsilon"]}
    # a crossing is timed as itself (it used to be timed as plain `demask` at its ε), and its run is
    # the one of its threshold × ε sweep that the headline picks
    crossing = max((r for r in json.loads((ev / "summary.json").read_text()) if r["policy"] == "head-cluster"),
                   key=lambda r: r["tpf_pooled"])
    assert cross["timed"] == {"preset": "guided", "units": "cluster", "rule": "budget", "scorer": "head",
                              "threshold": crossing["threshold"], "epsilon": 0.5}
    assert cross["tpf"] == crossing["tpf_pooled"]
    assert point["tpf"] == best["tpf_pooled"] and point["select_ms"] > 0 and point["forward_ms"] > 0
    assert point["ratio"] == pytest.approx(point["select_ms"] / point["forward_ms"])
    low, high = report["reference"]["confidence"]["tpf"], report["reference"]["oracle"]["tpf"]
    assert report["reference"]["oracle"]["policy"] == "oracle"
    assert high > low
    assert point["share"] == pytest.approx((point["tpf"] - low) / (high - low))
    assert png.stat().st_size > 1000 and "tiny" in done.stdout
    # every point is checked before any is timed: a misspelled label was "not within the window",
    # and only after the model had loaded and the points before it had been timed
    typo = [*cmd[:cmd.index("--point")], "--point", "tiny", str(ev), "demask", "--point", "cross", str(ev), "head-clster",
            *cmd[cmd.index("--window"):]]
    wrong = subprocess.run(typo, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert wrong.returncode == 2 and "tiny" not in wrong.stdout, wrong.stdout
    assert "--point cross: `" in wrong.stderr and "has no run labelled 'head-clster'" in wrong.stderr
    assert "its labels: demask, head-cluster, low_confidence, oracle, threshold" in wrong.stderr
    export(1)  # retrained into the same directory after the eval
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode != 0 and "holds other weights than those that decoded" in again.stderr


def test_head_tradeoff_finds_a_head_given_with_a_tilde(tmp_path, monkeypatch):
    """`eval decode` takes `head: ~/heads/h` (it expands it); `head_of` tested the literal path and
    called the head gone."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setenv("HOME", str(tmp_path))
    import head_tradeoff

    (tmp_path / "h").mkdir()
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "runs.json").write_text(json.dumps({"demask-1": {"task": "sort", "label": "demask", "policy": "demask",
                                                           "knobs": {"head": "~/h", "epsilon": 0.5}}}))
    run = {"policy": "demask", "head": "~/h", "epsilon": 0.5}
    head, preset, knobs = head_tradeoff.head_of(ev, "sort", run)
    assert head == str(tmp_path / "h") and preset == "demask" and knobs == {"head": head, "epsilon": 0.5}


def test_decode_overhead_replays_the_forwards_the_decode_made(monkeypatch):
    """The bare arm ran the full batch every time, with the policy's flags: once rows finished at
    different steps it counted forwards the decode never made (ratio 0.30 at τ 0.036). It now
    replays the warm-up decode's logged forwards: their rows and their capture flags."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from forward_log import LoggedDenoiser, replay

    den = LoggedDenoiser(MockDenoiser(seed=0))
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 5, 9]]
    res = generate(den, prompts, build_policy("clad", threshold=0.7), gen_length=8, block_length=8, steps=8)
    assert len(den.calls) == res.forwards and all(c[1:] == (False, False, True) for c in den.calls)
    rows = [shape[0] for shape, *_ in den.calls]
    assert rows[0] == 4 and min(rows) < 4, rows  # rows that finished left the batch
    replayed = LoggedDenoiser(den.inner)
    replay(replayed, den.calls, 10)
    assert replayed.calls == den.calls


def test_head_tradeoff_refuses_points_decoded_on_other_items(tmp_path, monkeypatch, capsys):
    """The share of the headroom compares TPFs of the reference directory and each point's: on
    other items it meant nothing, and nothing checked it. The draw each summary row is over is in
    `runs.json` (a results file may hold more items, from earlier draws)."""
    for name, digest in (("ref", "aa"), ("same", "aa"), ("other", "bb")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "runs.json").write_text(json.dumps(
            {f"sort/run{i}": {"task": "sort", "items_digest": digest} for i in range(2)}))
    (tmp_path / "old").mkdir()  # before 2026-11-30: an ids-only `items_sha256`, not comparable
    (tmp_path / "old" / "runs.json").write_text(json.dumps({"sort/run": {"task": "sort", "items_sha256": "aa"}}))
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from head_tradeoff import check_same_items

    check_same_items(tmp_path / "ref", [("same", str(tmp_path / "same"), "demask")], "sort")
    with pytest.raises(SystemExit, match=r"--point p: .*scored other sort items than --reference"):
        check_same_items(tmp_path / "ref", [("p", str(tmp_path / "other"), "demask")], "sort")
    check_same_items(tmp_path / "ref", [("o", str(tmp_path / "old"), "demask")], "sort")
    assert "cannot check" in capsys.readouterr().err


def test_runs_json_records_the_draw_each_summary_row_is_over(tmp_path):
    from depmask.cli import main as cli

    for n in (4, 2):  # a smaller rerun: the results files keep 4 items, the summary is over 2
        cli(["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", str(n), "--bootstrap", "0",
             "--policies", "[{name: low_confidence}]", "--output", str(tmp_path / "ev")])
    entry = next(iter(json.loads((tmp_path / "ev" / "runs.json").read_text()).values()))
    assert entry["items"] == 2 and len(entry["items_digest"]) == 64
