"""`depmask decode`: decode prompts with one policy and print completions and NFE / TPF / time.

This is a thin shell over `depmask.decoding.generate`: it loads the model, tokenizes, decodes and
prints. It does not evaluate answers (that is `eval`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from depmask.decoding import compile_mode, generate
from depmask.decoding.compile import check_compiler
from depmask.decoding.loop import check_lengths
from depmask.decoding.policies import LowConfidence, Policy
from depmask.decoding.trajectory import token_strings, trajectory_lines
from depmask.eval.runner import check_decoding, check_seed
from depmask.eval.summary import plain
from depmask.tasks.chat import encode_prompt


def decode(
    model: str,
    prompt: str | list[str] | None = None,
    prompt_ids: list[list[int]] | None = None,
    chat: bool | None = None,
    policy: Policy = LowConfidence(),  # noqa: B008 (jsonargparse reads the default)
    gen_length: int = 32,
    block_length: int | None = None,
    steps: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    stop_at_eos: bool = False,
    mask_id: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    capture_layers: list[int] | None = None,
    json_output: bool = False,
    compile_select: bool | str = False,
    show_steps: bool = False,
) -> dict:
    """Decode prompts with a parallel-unmasking policy.

    Args:
        model: local directory of a Hugging Face model (masked LM, LLaDA/Dream-style remote
            code, or depmask's embedded MDLM).
        prompt: a prompt text, or a list of them (tokenized with the model's tokenizer).
        prompt_ids: prompts as token ids, for models without a tokenizer.
        chat: wrap each prompt text as a user turn in the tokenizer's chat template, the assistant
            turn opened (what LLaDA-/Dream-Instruct are trained on, and what `eval decode` does);
            default: when the tokenizer has a template. Without it the text is encoded as written,
            no special tokens added.
        policy: the policy and its knobs, e.g. `--policy threshold --policy.threshold 0.9`. A
            `--policy` after a `--config` naming another policy keeps the config's values of the
            knobs both have (jsonargparse's rule: `--config clad.yaml --policy threshold` gives
            `threshold` 0.7, CLAD's τ, not 0.9); give them again.
        gen_length: answer tokens to generate.
        block_length: semi-autoregressive block size (default: gen_length).
        steps: step budget over all blocks (default: gen_length).
        temperature: 0 for argmax, > 0 for Gumbel-max sampling.
        seed: seed of the sampling generator.
        logits_eos_inf: never propose EOS (LLaDA option).
        confidence_eos_eot_inf: commit EOS candidates last (LLaDA option).
        stop_at_eos: stop a row once it has committed an EOS with nothing masked before it.
        mask_id: mask token id, when neither tokenizer nor config has it.
        device: torch device (default: cuda if available, else cpu).
        dtype: model dtype, e.g. bfloat16 (default: as saved).
        capture_layers: the layers whose attention the attention scorers (`clad`) average
            (default: the last quarter); `configs/model/*.yaml` name the ones `eval decode` uses
            for CLAD (LLaDA-8B 28–31, Dream-7B 24–27), so give them to decode as an eval does.
        json_output: print one JSON object instead of text.
        compile_select: compile the policy's step: `true` / `jit` with `torch.compile`, `aot`
            ahead of time with AOTInductor (dependency-guided policies; the lowest cost per step
            on CPU) — fewer, fused operations per step after a one-off compile (`aot`: cached
            on disk for later runs, `$DEPMASK_AOT_CACHE`); not for the oracle, which probes the
            model.
        show_steps: also print each answer's unmasking trajectory, the canvas after every
            forward that committed something (JSON rows always carry `commit_step`).
    """
    from depmask.models import HFDenoiser

    if (prompt is None) == (prompt_ids is None):
        raise ValueError("give exactly one of `prompt` (texts) or `prompt_ids` (token ids)")
    if chat is not None and prompt is None:
        raise ValueError("`chat` applies to prompt texts (`prompt`), not to `prompt_ids`")
    check_decoding(temperature, gen_length, block_length, steps, tasks=False)  # before the model loads (minutes for 8B)
    check_lengths(gen_length, block_length or gen_length, steps or gen_length)
    if not ([prompt] if isinstance(prompt, str) else prompt if prompt is not None else prompt_ids):
        raise ValueError("`prompt` / `prompt_ids` is empty: give at least one prompt")
    mode = compile_mode(compile_select)
    if mode is not None and policy.needs_probe:  # as `generate` would, after the load
        raise ValueError(f"`compile_select` is for policies that run no model forwards; {policy.name!r} probes "
                         "the model at every step — decode it without compiling")
    if mode == "aot" and policy.state_fields is None:  # as `AotSelect` would, after the load
        raise ValueError(f"`compile_select` 'aot': policy {policy.name!r} does not declare the state it reads "
                         "(`state_fields`), which ahead-of-time compiling needs; use 'jit' (torch.compile)")
    if mode is not None:
        check_compiler()
    policy.check_inputs()  # a head-scored policy without its head: before the load, not after it
    if type(policy).select is Policy.select:  # `--policy depmask.decoding.Policy`: the abstract base
        raise ValueError(f"`policy` ({type(policy).__name__}) decides nothing (no `select`): give a preset "
                         "name or a Policy subclass that implements it")
    check_seed("seed", seed)  # a generator's range, named before the load
    if not Path(model).expanduser().is_dir():
        raise ValueError(f"`model` ({model!r}) is not a local model directory")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    den = HFDenoiser.from_pretrained(model, mask_id=mask_id, device=device, dtype=dtype, capture_layers=capture_layers)
    tok = den.tokenizer
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt is not None:
        if tok is None:
            raise ValueError(f"model {model!r} has no tokenizer; pass `--prompt_ids` instead")
        prompt_ids = [encode_prompt(p, tok, chat) for p in prompt]
        warn_unknown_tokens(prompt, prompt_ids, tok)
    gen = torch.Generator(device=den.device).manual_seed(seed)
    res = generate(
        den, prompt_ids, policy, gen_length=gen_length, block_length=block_length, steps=steps,
        temperature=temperature, generator=gen, logits_eos_inf=logits_eos_inf,
        confidence_eos_eot_inf=confidence_eos_eot_inf, stop_at_eos=stop_at_eos,
        compile_select=compile_select,
    )
    rows = []
    for i, ids in enumerate(res.generated.tolist()):
        text = tok.decode(ids, skip_special_tokens=False) if tok is not None else None
        rows.append({"prompt": (prompt or prompt_ids)[i], "completion": text, "completion_ids": ids,
                     "nfe": int(res.nfe[i]), "tpf": float(res.tpf()[i]),
                     "commit_step": res.commit_step[i].tolist()})
    summary = {"policy": policy.name, **policy.knobs(), **res.summary(), "rows": rows}
    if json_output:  # standard JSON: an undefined value (τ with every token in one forward) is null
        print(json.dumps(plain(summary), allow_nan=False))
    else:
        for r in rows:
            shown = r["completion"] if r["completion"] is not None else r["completion_ids"]
            print(f">>> {r['prompt']}\n{shown}\n    NFE {r['nfe']}  TPF {r['tpf']:.2f}")
            if show_steps:
                lines = trajectory_lines(r["commit_step"], token_strings(r["completion_ids"], tok))
                print("\n".join(f"    {line}" for line in lines))
        print(f"[{policy!r}] NFE {summary['nfe']:.1f}  TPF {summary['tpf']:.2f}  "
              f"AFP {summary['afp']:.2f}  time {summary['seconds']:.2f}s")
    return summary


def warn_unknown_tokens(texts: list[str], ids: list[list[int]], tokenizer) -> None:
    """Warn (stderr) about prompts with words the tokenizer does not know: they become its unknown
    token and the model decodes from nothing it was trained on, with no other sign of it."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return
    for i, (text, row) in enumerate(zip(texts, ids)):
        k = sum(t == unk for t in row)
        if k:
            warnings.warn(f"prompt {i} ({text[:60]!r}): {k} of {len(row)} tokens are unknown to the model's "
                          f"tokenizer ({tokenizer.unk_token}); the embedded model knows only the synthetic tasks' "
                          "prompts (`depmask tasks show NAME`)", stacklevel=2)
