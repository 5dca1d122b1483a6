"""Exact-verifier accuracy of a tiny MDLM on a task, decoded with any policy.

Used by training (a quick `val/acc/<task>`), by `depmask mdlm evaluate` and by the quickstart.
It does not train; decoding goes through the shared loop, so numbers here mean the same as
everywhere else in depmask.
"""

from __future__ import annotations

import torch

from depmask.decoding import build_policy, generate
from depmask.models import HFDenoiser


def decode_task(denoiser: HFDenoiser, tokenizer, task, policy, n: int, seed: int = 0, batch_size: int = 128,
                steps: int | None = None):
    """Decode `n` test items; returns (examples, completions, per-row NFE list, seconds)."""
    examples = task.examples("test", n, seed=seed)
    completions, nfe, seconds = [], [], 0.0
    gen_length = task.answer_length
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        prompts = [tokenizer.convert_tokens_to_ids(ex.prompt.split()) for ex in chunk]
        res = generate(denoiser, prompts, policy, gen_length=gen_length, block_length=gen_length,
                       steps=steps or gen_length, pad_id=tokenizer.pad_token_id)
        completions += [" ".join(tokenizer.convert_ids_to_tokens(r)) for r in res.generated.tolist()]
        nfe += res.nfe.tolist()
        seconds += res.seconds
    return examples, completions, nfe, seconds


@torch.no_grad()
def decode_accuracy(model, tokenizer, task, n: int = 32, seed: int = 0, policy: str = "low_confidence") -> float:
    """Accuracy of one-token-per-step decoding (or `policy`) on `n` test items."""
    den = HFDenoiser(model, tokenizer)
    examples, completions, _, _ = decode_task(den, tokenizer, task, build_policy(policy), n, seed)
    return sum(task.score(ex, c) for ex, c in zip(examples, completions)) / len(examples)
