"""Selection overhead of the dependency-guided policies: time per step of scoring + greedy selection
divided by the time of the base forward of that step.

    python benchmarks/selection_overhead.py --out outputs/bench/selection_overhead.json
    python benchmarks/selection_overhead.py --simulate llada --out outputs/bench/selection_overhead_llada.json

Default mode: the shipped embedded model (`models/tiny-tasks`), a batch of `--batch` test prompts
of `--task`, decoded with `demask` and `clad` on `--device` (cpu). The steps of one real decode
are recorded; each is then replayed: `policy.select(state)` (scorer + selector), the scorer alone,
the bare forward on the same canvas, and the forward with what the policy asks for (hidden states
for `demask`, attention capture for `clad`). A selection is timed where the loop runs it: right
after that forward and the step statistics every policy needs (`decoding.loop.step_state`:
argmax, softmax, confidence), so caches and the core are in the state decoding leaves them in;
`select_after_forward_ms` times it right after the forward instead (on this project's CPU VM the
first operations after a forward run several times slower than warm ones, whatever they are).
`demask` uses a randomly initialised head of the default architecture unless `--head DIR` gives a
trained one (timing does not depend on weights).

`--simulate llada`: LLaDA-8B-like shapes on random tensors — batch 8, canvas 512, hidden 4096,
block 32 — on the GPU when there is one. The base forward is a random-weight model of LLaDA-8B's
shape (`--sim_*` flags; bf16), unless `--base_ms` gives a measured one; then `select` is timed
back to back, not right after a forward (`select_after_forward: false` in the JSON), which reads
lower than a decode would.

End to end, `decode_added_ms`: the wall time of the whole `generate()` call with the policy
minus that of the same decode replaying the policy's recorded commits (same forwards and
captures, no selection), per step — what the policy adds to decoding, with nothing to attribute
(noisier: a difference of two decode times). The two decodes alternate for `--decode_repeats`
rounds and the figure is the median of the rounds' differences, with a 95 % bootstrap interval
(`decode_ratio_ci`). `decode_ratio` is it over the bare forward.
`decode_step_ms` is the replayed decode's time per step: forward, statistics and loop as a decode
runs them, forwards back to back (on this project's CPU VM it came out 0.3–1.2 ms above the singly
timed forward; README, "Benchmarks").
`ratio_in_decode` and `decode_ratio_in_decode` divide `select_ms` and `decode_added_ms` by it.
`select_in_decode_ms`: the policy's select calls timed inside those decodes (per step);
`decode_rest_ms` = `decode_added_ms` − it: what the policy adds elsewhere (its `bind` once per
decode, a slower forward after a selection, and noise).

Reported per policy: `select_ms` (mean per step), `score_ms` (its scorer part),
`select_after_forward_ms`, `decode_added_ms`, `forward_ms` (bare forward), `capture_ms` (the
forward with hidden/attention minus the bare one), `ratio` = select / forward (target ≤ 0.05),
`ratio_with_capture` = (select + capture) / forward. Every time is the median of `--repeats`
after a warm-up. Alongside, hardware-independent: `flops_ratio`, the
matmul FLOPs of one select over those of the base forward (summed over the steps, counted by
`torch.utils.flop_counter`) — the part of `ratio` that no implementation can remove; the rest is
per-operation latency. Prints a table, writes JSON.

`--compile` (or `--compile jit`): time `select` and the scorer as `generate(...,
compile_select=True)` runs them, compiled with `torch.compile` (`depmask.decoding.compile`);
`--compile aot`: `select` as `compile_select="aot"` runs it (AOTInductor, `decoding/aot.py`; the
scorer alone is then timed eager). The forward stays eager. Selections are compiled on every
recorded step before timing (`compile_s`: that one-off time, or with `aot` the export and a load
when the disk cache holds the library, `decoding/aot.py`); FLOPs are counted
on the eager functions (the same arithmetic).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch
from bench_args import count, natural, positive
from decode_replay import Recorder, decode_overhead, timed
from llada_shapes import SIM_TOKENS, llada_shaped, simulated_states
from torch.utils.flop_counter import FlopCounterMode

from depmask.decoding import Policy, StepState, build_policy, compiled_select, generate
from depmask.decoding.clusters import candidate_positions
from depmask.decoding.loop import step_state
from depmask.models import HFDenoiser
from depmask.models.hf_denoiser import check_device
from depmask.predictor import DependencyHead
from depmask.tasks import get_task

TARGET = 0.05


def loop_step(den, forward, st: StepState) -> StepState:
    """What `generate()` runs before `policy.select` at this step: the forward (with the policy's
    needs) and the step statistics (`step_state`: argmax, softmax, confidence, entropy)."""
    s, e = st.block_start, st.block_end
    return step_state(forward(), st.tokens, st.mask[:, s:e], s, e, mask_id=den.mask_id)


def flops(fn) -> int:
    """Matmul FLOPs of one call of `fn` (FlopCounterMode: mm, bmm, addmm, baddbmm, attention)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def scorer_of(policy: Policy):
    """The scorer of a preset (`clad`, `demask`) or of a plain `guided` policy, to time it alone."""
    return getattr(policy, "_guided", policy)._scorer


def candidates_of(policy: Policy, state: StepState) -> torch.Tensor:
    s, e = state.block_start, state.block_end
    cand = torch.zeros_like(state.mask)
    threshold = getattr(policy, "_guided", policy).threshold
    cand[:, s:e] = candidate_positions(state.confidence[:, s:e], state.mask[:, s:e], threshold)
    return cand


@torch.inference_mode()  # as `generate()` runs them
def measure(den, policy: Policy, states: list[StepState], repeats: int, compile_select: str | None = None) -> dict:
    """Mean over steps (ms) of: select, its scorer, and — with a model — the bare forward and the
    forward with the policy's needs, on each step's own canvas. Under inference mode, as in the
    decode loop. `compile_select` ("jit" or "aot"): select (and with "jit" the scorer) compiled,
    after a compile pass over every step (its seconds in `compile_s`)."""
    device = states[0].mask.device
    totals: dict[str, float] = {}
    counts = {"select": 0, "forward": 0}
    select, score = policy.select, scorer_of(policy).score_block
    compile_s = None
    if compile_select:
        select = compiled_select(policy, compile_select)
        score = torch.compile(score) if compile_select == "jit" else score
        start = time.perf_counter()
        for st in states:
            select(st)
            score(st, candidates_of(policy, st))
        compile_s = time.perf_counter() - start
    for st in states:
        cand = candidates_of(policy, st)
        fns = {"select": lambda st=st: select(st), "score": lambda st=st, cand=cand: score(st, cand)}
        if den is not None:
            forward_needs = partial(den, st.tokens, need_hidden=policy.needs_hidden,
                                    need_attention=policy.needs_attention)
            # as in the loop: right after this step's forward and its statistics (`step_state`)
            prelude = partial(loop_step, den, forward_needs, st)
            fns = {"select": (prelude, fns["select"]), "score": (prelude, fns["score"]),
                   "select_after_forward": (forward_needs, fns["select"]),
                   "forward": partial(den, st.tokens), "forward_needs": forward_needs}
        for name, sec in timed(fns, device, repeats).items():
            totals[name] = totals.get(name, 0.0) + sec
        if den is not None:
            counts["select"] += flops(lambda st=st: policy.select(st))  # eager: the same arithmetic
            counts["forward"] += flops(fns["forward"])
    mean = {name: 1e3 * sec / len(states) for name, sec in totals.items()}
    mean["flops_ratio"] = counts["select"] / counts["forward"] if counts["forward"] else None
    mean["compile_s"], mean["compile_mode"] = compile_s, compile_select
    return mean


def summary_row(policy: Policy, mean: dict, steps: int, extra: dict) -> dict:
    capture = max(0.0, mean["forward_needs"] - mean["forward"])
    return {
        "policy": policy.name, **policy.knobs(), "steps": steps, "select_ms": mean["select"],
        "score_ms": mean["score"], "select_after_forward_ms": mean.get("select_after_forward"),
        "decode_added_ms": mean.get("decode_added"),
        "select_in_decode_ms": mean.get("select_in_decode"),
        "decode_rest_ms": (None if mean.get("select_in_decode") is None
                           else mean["decode_added"] - mean["select_in_decode"]),
        "decode_ratio": None if mean.get("decode_added") is None else mean["decode_added"] / mean["forward"],
        "decode_ratio_ci": (None if mean.get("decode_added_lo") is None
                            else [mean["decode_added_lo"] / mean["forward"], mean["decode_added_hi"] / mean["forward"]]),
        "decode_step_ms": mean.get("decode_step"),
        "ratio_in_decode": None if mean.get("decode_step") is None else mean["select"] / mean["decode_step"],
        "decode_ratio_in_decode": (None if mean.get("decode_step") is None
                                   else mean["decode_added"] / mean["decode_step"]),
        "forward_ms": mean["forward"], "capture_ms": capture,
        "ratio": mean["select"] / mean["forward"], "ratio_with_capture": (mean["select"] + capture) / mean["forward"],
        "flops_ratio": mean["flops_ratio"], "compiled": mean["compile_s"] is not None,
        "compile_mode": mean.get("compile_mode"),
        "compile_s": mean["compile_s"], "target": TARGET, **extra,
    }


def embedded(args) -> list[dict]:
    den = HFDenoiser.from_pretrained(args.model, device=args.device)
    task = get_task(args.task)
    examples = task.examples("test", args.batch, seed=args.seed)
    prompts = [den.tokenizer.convert_tokens_to_ids(ex.prompt.split()) for ex in examples]
    torch.manual_seed(args.seed)
    head = args.head or DependencyHead(hidden_size=den.hidden_size, base_fingerprint=den.fingerprint).eval()
    policies = [build_policy("demask", head=head, epsilon=args.epsilon), build_policy("clad", threshold=args.tau)]
    out = []
    for policy in policies:
        rec = Recorder(policy)
        generate(den, prompts, rec, gen_length=task.answer_length, pad_id=den.tokenizer.pad_token_id)
        mean = measure(den, policy, rec.states, args.repeats, args.compile)
        decode = decode_overhead(den, policy, prompts, task.answer_length, rec.commits, args.decode_repeats,
                                 args.compile, args.seed)
        mean.update(decode_added=decode["added"], decode_added_lo=decode["added_lo"],
                    decode_added_hi=decode["added_hi"], decode_step=decode["step"],
                    select_in_decode=decode["select"])
        out.append(summary_row(policy, mean, len(rec.states), {
            "mode": "embedded", "model": args.model, "task": args.task, "batch": args.batch,
            "canvas": int(rec.states[0].tokens.shape[1]), "block": task.answer_length,
            "device": str(den.device), "threads": torch.get_num_threads(), "repeats": args.repeats,
            "decode_repeats": args.decode_repeats}))
    return out


def simulate(args) -> list[dict]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    states = simulated_states(args, device, args.sim_steps)
    torch.manual_seed(args.seed)
    head = DependencyHead(hidden_size=args.sim_hidden).to(device).eval()
    policies = [build_policy("demask", head=head, epsilon=args.epsilon), build_policy("clad", threshold=args.tau)]
    den = None if args.base_ms else llada_shaped(args, device)
    out = []
    for policy in policies:
        mean = measure(den, policy, states, args.repeats, args.compile)
        if den is None:
            mean["forward"] = mean["forward_needs"] = args.base_ms
        out.append(summary_row(policy, mean, len(states), {
            "mode": "simulate-llada", "batch": args.batch, "canvas": args.sim_length, "hidden": args.sim_hidden,
            "block": args.sim_block, "layers": None if args.base_ms else args.sim_layers,
            "vocab": None if args.base_ms else args.sim_vocab,
            "base_forward": "given (--base_ms)" if args.base_ms else "random-weight LLaDA-shaped model, bf16",
            # without a model, select runs back to back, not right after a forward (faster: caches warm)
            "select_after_forward": not args.base_ms,
            "device": str(device), "repeats": args.repeats}))
    return out


def print_table(rows: list[dict]) -> None:
    def cell(value, width: int, digits: int = 3) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    print(f"{'policy':<8}{'steps':>6}{'select ms':>11}{'after fwd':>11}{'decode +ms':>11}{'score ms':>10}"
          f"{'forward ms':>12}{'capture ms':>12}{'ratio':>8}{'decode ratio':>14}{'w/ capture':>12}{'FLOPs ratio':>13}")
    for r in rows:
        print(f"{r['policy']:<8}{r['steps']:>6}{cell(r['select_ms'], 11)}{cell(r['select_after_forward_ms'], 11)}"
              f"{cell(r['decode_added_ms'], 11)}{cell(r['score_ms'], 10)}{cell(r['forward_ms'], 12)}"
              f"{cell(r['capture_ms'], 12)}{cell(r['ratio'], 8)}{cell(r['decode_ratio'], 14)}"
              f"{cell(r['ratio_with_capture'], 12)}{cell(r['flops_ratio'], 13, 4)}")
    for r in rows:
        how = f"compiled ({r['compile_mode']}), {r['compile_s']:.1f} s to compile" if r["compiled"] else "eager"
        decode = "" if r["decode_ratio"] is None else (
            f"; in a whole decode {r['decode_ratio']:.3f} [{r['decode_ratio_ci'][0]:.3f}, {r['decode_ratio_ci'][1]:.3f}]; against a step as a decode runs it "
            f"({r['decode_step_ms']:.2f} ms) {r['ratio_in_decode']:.3f}, in a whole decode {r['decode_ratio_in_decode']:.3f}; "
            f"of the {r['decode_added_ms']:.3f} ms a decode adds per step, {r['select_in_decode_ms']:.3f} in its select calls, "
            f"{r['decode_rest_ms']:.3f} elsewhere")
        print(f"{r['policy']}: target ratio <= {TARGET}: {'met' if r['ratio'] <= TARGET else 'NOT met'} "
              f"(ratio {r['ratio']:.3f}{decode}; {r['device']}, {r.get('mode')}, {how})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--simulate", choices=["llada"], default=None)
    ap.add_argument("--model", default="models/tiny-tasks")
    ap.add_argument("--task", default="sudoku4")
    ap.add_argument("--head", default=None, help="trained DependencyHead directory (default: random init)")
    ap.add_argument("--batch", type=count, default=8)
    ap.add_argument("--epsilon", type=float, default=0.1)
    ap.add_argument("--tau", type=float, default=0.7)
    ap.add_argument("--device", default=None, help="default: cpu (embedded), cuda if available (simulate)")
    ap.add_argument("--repeats", type=count, default=10)
    ap.add_argument("--decode_repeats", type=count, default=100,
                    help="rounds of the whole-decode comparison (two decodes each, ~0.1 s on the embedded model)")
    ap.add_argument("--threads", type=natural, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", nargs="?", const="jit", default=None, choices=["jit", "aot"],
                    help="time select compiled: jit (torch.compile, the default of a bare --compile) or aot")
    ap.add_argument("--sim_length", type=count, default=512)
    ap.add_argument("--sim_gen", type=count, default=256)
    ap.add_argument("--sim_block", type=count, default=32)
    ap.add_argument("--sim_hidden", type=count, default=4096)
    ap.add_argument("--sim_heads", type=count, default=32)
    ap.add_argument("--sim_layers", type=count, default=32)
    ap.add_argument("--sim_intermediate", type=count, default=12288)
    ap.add_argument("--sim_vocab", type=count, default=126464)
    ap.add_argument("--sim_steps", type=count, default=8, help="simulated steps timed")
    ap.add_argument("--base_ms", type=positive, default=None, help="simulate: a measured base forward (ms)")
    ap.add_argument("--out", default="outputs/bench/selection_overhead.json")
    args = ap.parse_args()
    if args.sim_gen > args.sim_length or args.sim_gen % args.sim_block:
        ap.error(f"--sim_gen ({args.sim_gen}) must be at most --sim_length ({args.sim_length}) and a multiple of "
                 f"--sim_block ({args.sim_block})")
    if args.simulate and args.head:
        ap.error("--head is not used with --simulate: the simulated shapes (hidden 4096) take a random head of "
                 "the class defaults; drop one of them")
    if args.sim_hidden % args.sim_heads:
        ap.error(f"--sim_hidden ({args.sim_hidden}) must be a multiple of --sim_heads ({args.sim_heads})")
    if args.simulate is not None:  # nothing of the embedded model is measured: its flags would be ignored
        given = [f"--{k}" for k in ("model", "task", "decode_repeats") if getattr(args, k) != ap.get_default(k)]
        if given:
            ap.error(f"{', '.join(given)} only apply to the embedded model (without --simulate)")
        if args.base_ms is not None:  # no model is built: its shape flags would be ignored
            given = [f"--{k}" for k in ("sim_layers", "sim_vocab", "sim_intermediate", "sim_heads")
                     if getattr(args, k) != ap.get_default(k)]
            if given:
                ap.error(f"{', '.join(given)} shape the simulated model, which --base_ms replaces")
    if args.simulate is None:  # the embedded model is measured: the simulate-only flags would be ignored
        given = [f"--{k}" for k, v in vars(args).items()
                 if (k.startswith("sim_") or k == "base_ms") and v != ap.get_default(k)]
        if given:
            ap.error(f"{', '.join(given)} only apply with --simulate llada")
    if not 0 <= args.tau <= 1:
        ap.error(f"--tau ({args.tau}) must lie in [0, 1] (CLAD's confidence threshold)")
    if not args.epsilon >= 0:
        ap.error(f"--epsilon ({args.epsilon}) must be >= 0 (DEMASK's budget)")
    if args.sim_vocab < SIM_TOKENS:
        ap.error(f"--sim_vocab ({args.sim_vocab}) must be >= {SIM_TOKENS}: the simulated states draw token ids below it")
    try:
        get_task(args.task)
        if args.device is not None:
            check_device(args.device)
    except ValueError as e:
        ap.error(f"--task / --device: {e}")
    if args.simulate is None:  # the model and the head, before either loads
        if not Path(args.model).expanduser().is_dir():
            ap.error(f"--model ({args.model!r}) is not a directory holding a model")
        if args.head is not None:
            try:
                build_policy("demask", head=args.head)
            except (OSError, ValueError) as e:
                ap.error(f"--head: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.simulate is None and args.device is None:
        args.device = "cpu"
    rows = simulate(args) if args.simulate else embedded(args)
    print_table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
