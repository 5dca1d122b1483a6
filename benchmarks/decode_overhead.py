"""Decoding-loop overhead: wall time of a full decode divided by the time of the forwards it made,
run bare.

    python benchmarks/decode_overhead.py --out outputs/bench/decode_overhead.json

The model is the LLaDA-shaped tiny MDLM architecture with random weights, sized to ~3M
parameters; the batch is 8 prompts of equal length. The warm-up decode logs every forward (its
rows: a row that has finished its block leaves the batch, so later forwards are narrower) and
whether it asked for hidden states or attention; "bare forwards" replay that list through the
same `HFDenoiser` on random tokens, with nothing else in the loop: the floor any decoder with
that policy pays. The ratio is what the loop adds: sampling, statistics, the policy,
bookkeeping. (Replaying the full batch every time, as this did before, counted forwards the
decode never made once rows finished at different steps: ratios below 1.)
Each measurement is the median of `--repeats` runs after one warm-up. Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from bench_args import count, natural
from forward_log import LoggedDenoiser, replay

from depmask.decoding import build_policy, generate
from depmask.decoding.loop import check_lengths
from depmask.models import HFDenoiser
from depmask.models.tiny_mdlm import TinyMDLMConfig, TinyMDLMForMaskedLM

MAX_POSITIONS = 256  # the benchmark model's max_position_embeddings
VOCAB = 60  # prompt and replayed token ids: below the model's EOS, pad and mask ids (61-63)


def build_model(seed: int) -> HFDenoiser:
    torch.manual_seed(seed)
    cfg = TinyMDLMConfig(
        vocab_size=64, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=704, max_position_embeddings=MAX_POSITIONS, mask_token_id=63,
        pad_token_id=62, eos_token_id=61,
    )
    return HFDenoiser(TinyMDLMForMaskedLM(cfg).eval())


def time_decode(den, prompts, policy, args) -> tuple[float, int]:
    res = generate(den, prompts, policy, gen_length=args.gen_length, block_length=args.block_length,
                   steps=args.gen_length)
    return res.seconds, res.forwards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="threshold")
    ap.add_argument("--threshold", type=float, default=None, help="the `threshold` policy's τ (default 0.9)")
    ap.add_argument("--batch", type=count, default=8)
    ap.add_argument("--prompt_length", type=natural, default=32)
    ap.add_argument("--gen_length", type=count, default=64)
    ap.add_argument("--block_length", type=count, default=32)
    ap.add_argument("--repeats", type=count, default=5)
    ap.add_argument("--threads", type=natural, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/bench/decode_overhead.json")
    args = ap.parse_args()
    if args.threshold is not None and args.policy != "threshold":
        ap.error(f"--threshold is the `threshold` policy's knob; --policy is {args.policy!r}")
    knobs = {"threshold": 0.9 if args.threshold is None else args.threshold} if args.policy == "threshold" else {}
    try:
        policy = build_policy(args.policy, **knobs)
    except ValueError as e:
        ap.error(str(e))
    if args.prompt_length + args.gen_length > MAX_POSITIONS:
        ap.error(f"--prompt_length ({args.prompt_length}) + --gen_length ({args.gen_length}) must be <= "
                 f"{MAX_POSITIONS}, the benchmark model's longest sequence")
    try:
        check_lengths(args.gen_length, args.block_length, args.gen_length)
    except ValueError as e:
        ap.error(f"--block_length / --gen_length: {e}")
    if policy.needs_probe:  # its probe forwards run on copies of the canvas: no like-for-like bare arm
        ap.error(f"--policy {args.policy!r} probes with extra forwards of another shape; this benchmark times "
                 "the loop around plain forwards")
    if args.threads:
        torch.set_num_threads(args.threads)

    den = build_model(args.seed)
    try:  # a head policy: this random model has no trained head (selection_overhead.py times those)
        if hasattr(policy, "bind"):
            policy.bind(den)
    except ValueError as e:
        ap.error(f"--policy {args.policy!r}: {e}")
    params = sum(p.numel() for p in den.model.parameters())
    g = torch.Generator().manual_seed(args.seed)
    prompts = torch.randint(0, VOCAB, (args.batch, args.prompt_length), generator=g).tolist()

    logged = LoggedDenoiser(den)
    time_decode(logged, prompts, policy, args)  # warm-up, logging the forwards (temperature 0: every decode makes them)
    calls = logged.calls
    replay(den, calls[:3], VOCAB)
    decode_t, bare_t = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        t, forwards = time_decode(den, prompts, policy, args)
        if forwards != len(calls):
            raise RuntimeError(f"a decode made {forwards} forwards, the logged one {len(calls)}: not comparable")
        decode_t.append(t)
        bare_t.append(replay(den, calls, VOCAB))
    d, b = statistics.median(decode_t), statistics.median(bare_t)
    rows_forwarded = sum(shape[0] for shape, *_ in calls)
    row = {
        "policy": policy.name, **policy.knobs(), "params": params, "batch": args.batch,
        "prompt_length": args.prompt_length, "gen_length": args.gen_length,
        "block_length": args.block_length, "forwards": len(calls), "rows_forwarded": rows_forwarded,
        "decode_s": d, "bare_s": b,
        "ratio": d / b, "target": 1.10, "threads": torch.get_num_threads(),
        "device": str(den.device), "repeats": args.repeats,
    }
    print(f"{'policy':<14}{'params':>10}{'batch':>7}{'forwards':>10}{'rows':>7}{'decode s':>10}{'bare s':>10}"
          f"{'ratio':>8}")
    print(f"{policy.name:<14}{params:>10,}{args.batch:>7}{len(calls):>10}{rows_forwarded:>7}{d:>10.3f}{b:>10.3f}"
          f"{d / b:>8.3f}")
    print(f"target <= 1.10: {'met' if d / b <= 1.10 else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
