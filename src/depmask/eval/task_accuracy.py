"""Exact-verifier accuracy of a model on a task, decoded with any policy.

Used by training (a quick `val/acc/<task>`), by `depmask mdlm evaluate` and by the quickstart,
so one row means the same everywhere. Decoding goes through the shared loop. It does not train
and imports no Lightning.
"""

from __future__ import annotations

import torch

from depmask.decoding import build_policy, generate
from depmask.models import HFDenoiser
from depmask.tasks import TASKS
from depmask.tasks.adapter import check_symbols

DEFAULT_TASKS: list[str] = list(TASKS)


def decode_task(denoiser: HFDenoiser, tokenizer, task, policy, n: int, seed: int = 0, batch_size: int = 128,
                steps: int | None = None):
    """Decode `n` test items of `task` (a task object or its name); returns (examples, completions,
    per-row NFE list, seconds)."""
    from depmask.tasks import get_task

    if isinstance(task, str):
        task = get_task(task)
    for name, value in (("n", n), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` ({value!r}) must be an int >= 1")
    check_symbols(getattr(task, "name", type(task).__name__), task, tokenizer)  # else scored as [UNK] prompts
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


def score_task(denoiser: HFDenoiser, tokenizer, task, policy, n: int, seed: int = 0, batch_size: int = 128,
               steps: int | None = None) -> dict:
    """One result row: accuracy, mean NFE, `tpf`, seconds, n. `tpf` is pooled over the items (answer
    length / mean NFE: `eval decode`'s `tpf_pooled`, not its per-item mean `tpf`)."""
    if isinstance(task, str):
        from depmask.tasks import get_task

        task = get_task(task)
    exs, comps, nfe, secs = decode_task(denoiser, tokenizer, task, policy, n, seed, batch_size, steps)
    mean_nfe = sum(nfe) / len(nfe)
    return {"accuracy": sum(task.score(e, c) for e, c in zip(exs, comps)) / len(exs), "nfe": mean_nfe,
            "tpf": task.answer_length / mean_nfe, "seconds": secs, "n": len(exs)}


@torch.no_grad()
def decode_accuracy(model, tokenizer, task, n: int = 32, seed: int = 0, policy: str = "low_confidence") -> float:
    """Accuracy of one-token-per-step decoding (or `policy`) on `n` test items."""
    return score_task(HFDenoiser(model, tokenizer), tokenizer, task, build_policy(policy), n, seed)["accuracy"]
