"""What the benchmark scripts time and how they form their ratios, pinned with fake clocks and fake
timed callables of known cost (no timing of real work is asserted)."""

import importlib
import json
import sys
from types import SimpleNamespace

import pytest
import torch

from depmask.decoding import build_policy, generate
from tests.conftest import EMBEDDED, ROOT
from tests.decoding.mock import MockDenoiser


@pytest.fixture
def bench(monkeypatch):
    """The benchmark scripts' modules, importable as `python benchmarks/x.py` imports them."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module


class Clock:
    """A fake `time` module: `perf_counter` reads `now`; fakes advance it by their cost. `pending`
    stands for launched, unfinished device work that a (fake) synchronisation waits for."""
    now = pending = 0.0

    def perf_counter(self):
        return self.now

    def sync(self):
        self.now, self.pending = self.now + self.pending, 0.0

    def cost(self, *seconds, pending=False):
        it = iter(seconds)

        def fn(*_, **__):
            if pending:
                self.pending += next(it)
            else:
                self.now += next(it)
        return fn


def test_timed_takes_the_median_of_the_rounds_after_the_warm_up_and_leaves_the_prelude_out(bench, monkeypatch):
    """`timed`: one untimed warm-up round, then the median (not the mean) of `repeats` rounds; a
    `(prelude, fn)` entry times `fn` alone; `raw` gives the rounds in order."""
    dr = bench("decode_replay")
    clock = Clock()
    monkeypatch.setattr(dr, "time", clock)
    fns = {"a": clock.cost(100.0, 1.0, 2.0, 30.0), "b": (clock.cost(1000.0, 1000.0, 1000.0, 1000.0),
                                                         clock.cost(9.0, 3.0, 3.0, 3.0))}
    assert dr.timed(fns, torch.device("cpu"), 3) == {"a": 2.0, "b": 3.0}
    fns = {"a": clock.cost(100.0, 1.0, 2.0, 30.0)}
    assert dr.timed(fns, torch.device("cpu"), 3, raw=True) == {"a": [1.0, 2.0, 30.0]}


def test_timed_and_timing_synchronise_the_device_around_what_they_time(bench, monkeypatch):
    """On CUDA the work is asynchronous: the prelude's pending work is waited for before the clock
    starts, and the timed function's before it stops (else the time is the launch's)."""
    dr = bench("decode_replay")
    clock = Clock()
    monkeypatch.setattr(dr, "time", clock)
    monkeypatch.setattr(torch.cuda, "synchronize", clock.sync)
    fns = {"a": (clock.cost(50.0, 50.0, pending=True), clock.cost(2.0, 2.0, pending=True))}
    assert dr.timed(fns, torch.device("cuda"), 1) == {"a": 2.0}
    timing = dr.Timing(build_policy("clad", threshold=0.5), clock.cost(5.0, pending=True), torch.device("cuda"))
    clock.pending = 40.0  # the previous step's forward, still running
    timing.select(None)
    assert timing.seconds == [5.0]


def _decode_overhead(dr, monkeypatch, device, rounds, select_costs, repeats=3):
    """`decode_overhead` on canned per-round seconds (`rounds`, as `timed(..., raw=True)` returns them)
    and canned select seconds per decode (the first: the warm-up decode)."""
    seen = {}
    costs = iter(select_costs)

    def fake_timed(fns, dev, reps, raw=False):
        seen.update(names=sorted(fns), repeats=reps, raw=raw)
        for _ in range(reps + 1):
            fns["policy"]()
        return {k: v for k, v in rounds.items() if k in fns}

    def fake_generate(den, prompts, policy, **kw):
        if isinstance(policy, dr.Timing):
            policy.seconds.append(next(costs))

    monkeypatch.setattr(dr, "timed", fake_timed)
    monkeypatch.setattr(dr, "generate", fake_generate)
    den = SimpleNamespace(device=torch.device(device), tokenizer=SimpleNamespace(pad_token_id=0))
    out = dr.decode_overhead(den, build_policy("clad", threshold=0.5), [[1, 2]], 4, [None] * 4, repeats, None)
    return out, seen


def test_decode_overhead_is_the_median_of_paired_differences_per_step(bench, monkeypatch):
    """`added` = median over rounds of (policy decode − replay decode of the same round), per step
    (not the difference of medians, not mispaired, not negated); `step` the replay's median per
    step; `select` the median of the select time inside each decode, the warm-up decode left out;
    `repeats` reaches the timing."""
    dr = bench("decode_replay")
    raw = {"policy": [1.0, 2.0, 4.0], "replay": [0.9, 1.0, 3.9]}  # paired diffs 0.1, 1.0, 0.1
    out, seen = _decode_overhead(dr, monkeypatch, "cpu", raw, [10.0, 1.0, 2.0, 3.0])
    assert seen == {"names": ["policy", "replay"], "repeats": 3, "raw": True}
    assert out["added"] == pytest.approx(1e3 * 0.1 / 4)
    assert out["added_lo"] <= out["added"] <= out["added_hi"]
    assert out["added_hi"] <= 1e3 * 1.0 / 4 + 1e-9 and out["added_lo"] >= 1e3 * 0.1 / 4 - 1e-9
    assert out["step"] == pytest.approx(1e3 * 1.0 / 4)
    assert out["select"] == pytest.approx(1e3 * 2.0 / 4)


def test_decode_overhead_on_a_gpu_takes_added_from_the_untimed_decode(bench, monkeypatch):
    """On CUDA, `Timing`'s synchronisations slow the timed decode: `added` comes from a third,
    untimed `plain` decode of the policy."""
    dr = bench("decode_replay")
    raw = {"policy": [9.0, 9.0, 9.0], "plain": [1.5, 1.5, 1.5], "replay": [1.0, 1.0, 1.0]}
    out, seen = _decode_overhead(dr, monkeypatch, "cuda", raw, [1.0, 1.0, 1.0, 1.0])
    assert seen["names"] == ["plain", "policy", "replay"]
    assert out["added"] == pytest.approx(1e3 * 0.5 / 4)


def test_summary_row_divides_each_time_by_the_right_base(bench):
    """`ratio` = select / bare forward; the capture is (forward with needs − bare forward);
    the decode figures over the bare forward and over a decode's step; the rest is
    `decode_added − select_in_decode`."""
    summary_row = bench("selection_overhead").summary_row
    mean = {"select": 1.0, "score": 0.5, "forward": 10.0, "forward_needs": 14.0, "select_after_forward": 2.0,
            "decode_added": 3.0, "decode_added_lo": 2.0, "decode_added_hi": 4.0, "decode_step": 20.0,
            "select_in_decode": 1.5, "flops_ratio": 0.01, "compile_s": None, "compile_mode": None}
    r = summary_row(build_policy("clad", threshold=0.5), mean, 7, {"mode": "x"})
    assert (r["select_ms"], r["score_ms"], r["forward_ms"], r["select_after_forward_ms"]) == (1.0, 0.5, 10.0, 2.0)
    assert r["capture_ms"] == 4.0 and r["ratio"] == pytest.approx(0.1)
    assert r["ratio_with_capture"] == pytest.approx(0.5)
    assert r["decode_ratio"] == pytest.approx(0.3) and r["decode_ratio_ci"] == pytest.approx([0.2, 0.4])
    assert r["ratio_in_decode"] == pytest.approx(0.05) and r["decode_ratio_in_decode"] == pytest.approx(0.15)
    assert r["decode_rest_ms"] == pytest.approx(1.5) and r["decode_added_ms"] == 3.0
    assert r["steps"] == 7 and r["mode"] == "x" and r["compiled"] is False


def test_measure_times_each_entry_on_what_it_names(bench, monkeypatch):
    """`select` runs after the step's forward with the policy's needs and the loop's statistics
    (`step_state`), `select_after_forward` right after the forward alone; `forward` is the bare
    forward (no capture); the means are per step whatever `repeats` is, which reaches `timed`;
    `flops_ratio` is over the bare forward's FLOPs."""
    so = bench("selection_overhead")
    from forward_log import LoggedDenoiser

    den = LoggedDenoiser(MockDenoiser(seed=0))
    policy = build_policy("clad", threshold=0.5)
    rec = so.Recorder(policy)
    generate(den, [[1, 2, 3], [4, 5, 6]], rec, gen_length=8)
    states = rec.states[:2]
    stats = []
    real_step_state = so.step_state
    monkeypatch.setattr(so, "step_state", lambda *a, **k: stats.append(1) or real_step_state(*a, **k))
    ran, seen = {}, {}

    def fake_timed(fns, device, repeats):
        seen["repeats"] = repeats
        for name, entry in fns.items():
            prelude, fn = entry if isinstance(entry, tuple) else (None, entry)
            den.calls.clear(), stats.clear()
            if prelude is not None:
                prelude()
            before = (list(den.calls), len(stats))
            den.calls.clear()
            fn()
            ran[name] = (before, list(den.calls))
        return {name: 1.0 for name in fns}

    monkeypatch.setattr(so, "timed", fake_timed)
    mean = so.measure(den, policy, states, 3)
    assert seen["repeats"] == 3
    assert all(mean[k] == pytest.approx(1e3) for k in ("select", "score", "forward", "forward_needs"))
    shape = tuple(states[-1].tokens.shape)
    needs = [(shape, False, False, True)]  # clad asks for attention
    assert ran["forward"] == (([], 0), [(shape, False, False, False)])
    assert ran["forward_needs"] == (([], 0), needs)
    assert ran["select"] == ((needs, 1), []) and ran["score"] == ((needs, 1), [])
    assert ran["select_after_forward"] == ((needs, 0), [])
    sel = sum(so.flops(lambda st=st: policy.select(st)) for st in states)
    fwd = sum(so.flops(lambda st=st: den.inner(st.tokens)) for st in states)
    assert sel > 0 and mean["flops_ratio"] == pytest.approx(sel / fwd)


def _args(**kw):
    base = dict(model=str(EMBEDDED), device="cpu", task="sudoku4", batch=1, seed=0, head=None, epsilon=0.1,
                tau=0.7, repeats=3, decode_repeats=5, compile=None)
    return SimpleNamespace(**{**base, **kw})


def test_embedded_passes_its_repeats_on_and_labels_them(bench, monkeypatch):
    """`--repeats` reaches `measure`, `--decode_repeats` the whole-decode comparison, and each is
    reported under its own name, with the decode figures under theirs."""
    so = bench("selection_overhead")
    calls = {}

    def fake_measure(den, policy, states, repeats, compile_select=None):
        calls.setdefault("measure", []).append((repeats, compile_select))
        return {"select": 1.0, "score": 0.5, "forward": 10.0, "forward_needs": 11.0, "select_after_forward": 2.0,
                "flops_ratio": 0.1, "compile_s": None, "compile_mode": None}

    def fake_decode(den, policy, prompts, gen_length, commits, repeats, compile_select, seed):
        calls.setdefault("decode", []).append(repeats)
        return {"added": 3.0, "added_lo": 2.0, "added_hi": 4.0, "step": 20.0, "select": 1.5}

    monkeypatch.setattr(so, "measure", fake_measure)
    monkeypatch.setattr(so, "decode_overhead", fake_decode)
    rows = so.embedded(_args())
    assert calls == {"measure": [(3, None)] * 2, "decode": [5, 5]}
    for r in rows:
        assert r["repeats"] == 3 and r["decode_repeats"] == 5 and r["batch"] == 1 and r["mode"] == "embedded"
        assert (r["decode_added_ms"], r["decode_step_ms"], r["select_in_decode_ms"]) == (3.0, 20.0, 1.5)
        assert r["decode_ratio_ci"] == pytest.approx([0.2, 0.4]) and r["threads"] == torch.get_num_threads()


def _main(so, monkeypatch, tmp_path, argv, target):
    """Run `selection_overhead.main()` with `target` (`simulate` or `embedded`) replaced; return the
    args it got and the torch threads at that moment."""
    got = {}

    monkeypatch.setattr(so, target, lambda args: got.update(args=args, threads=torch.get_num_threads()) or [])
    monkeypatch.setattr(sys, "argv", ["selection_overhead.py", *argv, "--out", str(tmp_path / "o.json")])
    so.main()
    return got


def test_simulate_defaults_are_llada_8b_shapes(bench, monkeypatch, tmp_path):
    """The README's `--simulate llada` claims LLaDA-8B's shapes: batch 8, canvas 512, answer 256,
    hidden 4096, block 32, 32 layers × 32 heads, intermediate 12288, vocabulary 126464."""
    so = bench("selection_overhead")
    a = _main(so, monkeypatch, tmp_path, ["--simulate", "llada"], "simulate")["args"]
    assert (a.batch, a.sim_length, a.sim_gen, a.sim_hidden, a.sim_block) == (8, 512, 256, 4096, 32)
    assert (a.sim_layers, a.sim_heads, a.sim_intermediate, a.sim_vocab) == (32, 32, 12288, 126464)


def test_selection_overhead_sets_the_threads_it_is_given(bench, monkeypatch, tmp_path):
    so = bench("selection_overhead")
    before = torch.get_num_threads()
    try:
        got = _main(so, monkeypatch, tmp_path, ["--threads", "2"], "embedded")
    finally:
        torch.set_num_threads(before)
    assert got["threads"] == 2 and got["args"].device == "cpu"


def test_simulated_states_and_model_have_the_shapes_asked_for(bench):
    """The states: batch × canvas, the block the first `block` positions of the answer (which
    starts `sim_gen` before the end), bf16 hidden [b, l, d], attention [b, l, l]; the model bf16 of
    the given shape, the default dtype restored."""
    ls = bench("llada_shapes")
    args = SimpleNamespace(seed=0, batch=2, sim_length=24, sim_gen=8, sim_hidden=16, sim_block=4, sim_vocab=70,
                           sim_layers=1, sim_heads=2, sim_intermediate=32)
    st = ls.simulated_states(args, torch.device("cpu"), 2)[0]
    assert (st.block_start, st.block_end, st.steps_per_block) == (16, 20, 4)
    assert st.tokens.shape == (2, 24) and st.attention.shape == (2, 24, 24)
    assert st.hidden.shape == (2, 24, 16) and st.hidden.dtype == torch.bfloat16
    assert st.mask[:, 16].all() and not st.mask[:, :16].any() and not st.mask[:, 20:].any()
    den = ls.llada_shaped(args, torch.device("cpu"))
    cfg = den.model.config  # the dtype flipped to bf16 while building it, then restored
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.max_position_embeddings) == (16, 1, 70, 24)
    assert {p.dtype for p in den.model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32


def test_simulate_with_a_given_base_forward_divides_by_it(bench, monkeypatch):
    """`--base_ms`: no model; the forward (with and without capture) is the given time."""
    so = bench("selection_overhead")
    got = {}

    def fake_measure(den, policy, states, repeats, compile_select=None):
        got.update(den=den, repeats=repeats, canvas=states[0].tokens.shape)
        return {"select": 0.1, "score": 0.05, "flops_ratio": None, "compile_s": None, "compile_mode": None}

    monkeypatch.setattr(so, "measure", fake_measure)
    args = _args(batch=2, sim_length=24, sim_gen=8, sim_hidden=16, sim_block=4, sim_steps=2, base_ms=2.0,
                 sim_layers=32, sim_vocab=126464, device="cpu")
    rows = so.simulate(args)
    assert got == {"den": None, "repeats": 3, "canvas": (2, 24)}
    for r in rows:
        assert r["forward_ms"] == 2.0 and r["capture_ms"] == 0.0 and r["ratio"] == pytest.approx(0.05)
        assert r["select_after_forward"] is False and r["layers"] is None and r["block"] == 4


def test_replay_times_the_forwards_alone_with_their_logged_masks(bench, monkeypatch):
    """`replay` builds its inputs before the clock starts, and replays each call as logged,
    an attention mask included where the decode passed one."""
    fl = bench("forward_log")
    clock = Clock()
    monkeypatch.setattr(fl, "time", clock)

    class Costly(MockDenoiser):  # each forward costs 1 s
        def __call__(self, *a, **k):
            clock.now += 1.0
            return super().__call__(*a, **k)

    real_randint = torch.randint  # building an input costs 100 s
    monkeypatch.setattr(torch, "randint", lambda *a, **k: clock.cost(100.0)() or real_randint(*a, **k))
    calls = [((2, 5), True, False, False), ((1, 5), False, True, True)]
    assert fl.replay(Costly(seed=0), calls, 10) == 2.0
    monkeypatch.setattr(torch, "randint", real_randint)
    den = fl.LoggedDenoiser(MockDenoiser(seed=0))
    fl.replay(den, calls, 10)
    assert den.calls == calls


def _counting_replay(seconds, replayed):
    """A `replay` that records how many forwards it was handed and returns the next of `seconds`."""
    seconds = iter(seconds)
    return lambda den, calls, vocab: (replayed.append(len(calls)), next(seconds))[1]


def _main_json(module, monkeypatch, tmp_path, argv):
    """Run a benchmark script's `main` with `argv` and `--out`; the JSON it wrote."""
    out = tmp_path / "o.json"
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv, "--out", str(out)])
    module.main()
    return json.loads(out.read_text())


def test_decode_overhead_script_divides_medians_of_the_timed_rounds(bench, monkeypatch, tmp_path):
    """`decode_overhead.py`: the warm-up decode is logged, not timed; decode and bare are the
    medians of `--repeats` rounds, the bare arm replays every logged forward."""
    do = bench("decode_overhead")
    logged = [((2, 8), False, False, False)] * 5
    decode_times, replayed = iter([100.0, 1.0, 2.0, 30.0]), []

    def fake_time_decode(den, prompts, policy, args):
        if hasattr(den, "calls"):
            den.calls.extend(logged)
        return next(decode_times), len(logged)

    monkeypatch.setattr(do, "time_decode", fake_time_decode)
    monkeypatch.setattr(do, "replay", _counting_replay([50.0, 0.5, 1.0, 0.9], replayed))
    row = _main_json(do, monkeypatch, tmp_path, ["--repeats", "3"])
    assert replayed == [3, 5, 5, 5]
    assert (row["decode_s"], row["bare_s"], row["repeats"], row["forwards"]) == (2.0, 0.9, 3, 5)
    assert row["ratio"] == pytest.approx(2.0 / 0.9) and row["rows_forwarded"] == 10


def test_harvest_throughput_replays_one_runs_forwards(bench, monkeypatch, tmp_path):
    """Each timed harvest's forwards are logged afresh (not the warm-up's and earlier runs' too);
    the perturbed forwards are those without hidden states; ratio = median harvest / median bare."""
    ht = bench("harvest_throughput")
    walls, replayed = iter([100.0, 2.0, 4.0]), []

    def fake_harvest(den, groups, cfg, pad_id, out):
        den.calls.extend([((4, 9), False, True, False), ((8, 9), False, False, False), ((8, 9), False, False, False)])
        return next(walls), 4, 12

    monkeypatch.setattr(ht, "harvest_once", fake_harvest)
    monkeypatch.setattr(ht, "replay", _counting_replay([1.0, 1.0], replayed))
    row = _main_json(ht, monkeypatch, tmp_path,
                     ["--model", str(EMBEDDED), "--examples", "2", "--batch_size", "2", "--repeats", "2"])
    assert replayed == [3, 3] and row["forwards"] == 3 and row["perturbed_forwards"] == 2
    assert (row["harvest_s"], row["forwards_s"], row["ratio"], row["repeats"]) == (3.0, 1.0, 3.0, 2)


def test_head_tradeoff_times_the_runs_policy_as_asked(bench, monkeypatch):
    """`time_head` rebuilds the run's preset with its knobs and times it with the given repeats and
    compile mode; ratio = select / bare forward."""
    from depmask.models import HFDenoiser
    from depmask.tasks import get_task

    ht, got = bench("head_tradeoff"), {}

    def fake_measure(den, policy, states, repeats, compile_select=None):
        got.update(policy=(policy.name, policy.knobs()), repeats=repeats, compile=compile_select)
        return {"select": 1.0, "forward": 20.0, "forward_needs": 40.0, "flops_ratio": 0.5}

    monkeypatch.setattr(ht, "measure", fake_measure)
    monkeypatch.setattr(ht, "generate", lambda *a, **k: None)
    cost = ht.time_head(HFDenoiser.from_pretrained(EMBEDDED), get_task("sudoku4"), "clad", {"threshold": 0.6},
                        1, 4, "aot", 0)
    assert got["repeats"] == 4 and got["compile"] == "aot" and got["policy"][1]["threshold"] == 0.6
    assert cost["ratio"] == pytest.approx(0.05) and cost["forward_ms"] == 20.0


def test_head_tradeoff_reference_lines_take_the_best_rule_and_the_oracles_decoding_tpf(bench, monkeypatch, tmp_path):
    """The low line is the best confidence rule's TPF in the window; the high line is the oracle's
    TPF without its probe forwards (`decode_tpf`)."""
    ht = bench("head_tradeoff")
    tops = [{"policy": "threshold", "tpf": 1.5, "decode_tpf": 1.5, "accuracy": 0.9, "knobs": "a"},
            {"policy": "entropy_bound", "tpf": 1.8, "decode_tpf": 1.8, "accuracy": 0.9, "knobs": "b"},
            {"policy": "oracle", "tpf": 1.1, "decode_tpf": 3.0, "accuracy": 1.0, "knobs": "c"}]
    monkeypatch.setattr(ht, "load_rows", lambda d, t: [])
    monkeypatch.setattr(ht, "headline", lambda rows, tolerance, measure: tops)
    lines = ht.reference_lines(tmp_path, "sort", 0.01, "tpf")
    assert lines["confidence"]["policy"] == "entropy_bound" and lines["confidence"]["tpf"] == 1.8
    assert lines["oracle"]["tpf"] == 3.0


def test_positive_refuses_zero(bench):
    """`--base_ms 0` would divide by zero: a time must be > 0."""
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="must be a number > 0, got '0'"):
        bench("bench_args").positive("0")
