"""Decoding-loop overhead: wall time of a full decode divided by the time of the same number of
bare forwards on the same batch.

    python benchmarks/decode_overhead.py --out outputs/bench/decode_overhead.json

The model is the LLaDA-shaped tiny MDLM architecture with random weights, sized to ~3M
parameters; the batch is 8 prompts of equal length. "Bare forwards" call the same `HFDenoiser`
on the same canvas shape, `forwards` times, asking for the hidden states and attention the policy
needs, with nothing else in the loop; that is the floor any decoder with that policy pays. The ratio is what the loop adds: sampling, statistics, the policy, bookkeeping.
Each measurement is the median of `--repeats` runs after one warm-up. Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_args import count, natural

from depmask.decoding import build_policy, generate
from depmask.decoding.loop import check_lengths
from depmask.models import HFDenoiser
from depmask.models.tiny_mdlm import TinyMDLMConfig, TinyMDLMForMaskedLM

MAX_POSITIONS = 256  # the benchmark model's max_position_embeddings


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


def time_bare(den, tokens, n, policy) -> float:
    """`n` forwards asking for what the policy makes the loop ask for (hidden states, attention
    capture), so that both arms pay for the same forwards."""
    start = time.perf_counter()
    for _ in range(n):
        den(tokens, need_hidden=policy.needs_hidden, need_attention=policy.needs_attention)
    return time.perf_counter() - start


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
    prompts = torch.randint(0, 60, (args.batch, args.prompt_length), generator=g).tolist()
    canvas = torch.randint(0, 60, (args.batch, args.prompt_length + args.gen_length), generator=g)

    time_decode(den, prompts, policy, args)  # warm-up
    time_bare(den, canvas, 3, policy)
    decode_t, bare_t, forwards = [], [], 0
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        t, forwards = time_decode(den, prompts, policy, args)
        decode_t.append(t)
        bare_t.append(time_bare(den, canvas, forwards, policy))
    d, b = statistics.median(decode_t), statistics.median(bare_t)
    row = {
        "policy": policy.name, **policy.knobs(), "params": params, "batch": args.batch,
        "prompt_length": args.prompt_length, "gen_length": args.gen_length,
        "block_length": args.block_length, "forwards": forwards, "decode_s": d, "bare_s": b,
        "ratio": d / b, "target": 1.10, "threads": torch.get_num_threads(),
        "device": str(den.device), "repeats": args.repeats,
    }
    print(f"{'policy':<14}{'params':>10}{'batch':>7}{'forwards':>10}{'decode s':>10}{'bare s':>10}{'ratio':>8}")
    print(f"{policy.name:<14}{params:>10,}{args.batch:>7}{forwards:>10}{d:>10.3f}{b:>10.3f}{d / b:>8.3f}")
    print(f"target <= 1.10: {'met' if d / b <= 1.10 else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
