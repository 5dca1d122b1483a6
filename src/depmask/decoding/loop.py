"""The decoding loop: one loop, every policy.

Shapes: `b` batch, `p` prompt width (longest prompt), `g` gen_length, `l = p + g` canvas,
`c` columns of the current block, `v` vocabulary.

The loop owns the model call, the semi-autoregressive blocks, the batch (left padding plus an
attention mask; finished rows leave the batch so they cost nothing), the RNG and the accounting:
forwards per row (NFE) and the step at which every generated position was committed. It does
not decide which positions to commit — `policy.select(state)` does, and the loop checks that the
answer keeps the policy contract.

Faithful to LLaDA's `generate()`: the canvas is the prompt followed by `g` mask tokens; the
answer is split into `g / block_length` blocks decoded left to right with `steps / num_blocks`
steps each (at most: a block ends when it has no mask left, so with more steps than a block has
positions NFE stays below `steps`, where LLaDA runs the rest as forwards that commit nothing —
the tokens are the same); only masked positions of the current block may be committed; at
temperature 0 the candidate is the argmax (never the mask token itself, which an untrained model may propose; the
confidence is still read from the unmodified softmax, as LLaDA does). The EOS options follow
LLaDA's `logits_eos_inf` / `confidence_eos_eot_inf` as its docstring and paper (Appendix B.4)
describe them. `confidence_eos_eot_inf` differs from LLaDA's code, which bans after the argmax
with a chained assignment: EOS's logit to -inf in the noisy copy, EOT's in the logits the
confidence comes from. At temperature 0 the noisy copy *is* those logits, so EOS and EOT
candidates both get confidence 0 and every other position's p(x0) is renormalised without both
masses; at temperature > 0 only EOT candidates get 0 and only EOT's mass is removed. Here every
candidate in `eos_ids` (LLaDA's EOS and EOT) gets confidence 0 and nothing is renormalised, so
the order of the other positions, and with it the committed tokens, can differ from LLaDA's.
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Sequence

import torch

from depmask.decoding.compile import compile_mode, compiled_select
from depmask.decoding.policies.base import Policy
from depmask.decoding.result import DecodeResult
from depmask.decoding.sampling import gumbel_argmax, token_statistics
from depmask.decoding.state import StepState
from depmask.models.denoiser import Denoiser


def check_lengths(gen_length: int, block_length: int, steps: int) -> int:
    """Validate the length arguments; returns the number of blocks."""
    if gen_length < 1:
        raise ValueError(f"`gen_length` ({gen_length}) must be >= 1")
    if block_length < 1 or gen_length % block_length:
        raise ValueError(
            f"`block_length` ({block_length}) must be >= 1 and divide `gen_length` ({gen_length})"
        )
    num_blocks = gen_length // block_length
    if steps < 1 or steps % num_blocks:
        raise ValueError(
            f"`steps` ({steps}) must be a positive multiple of the number of blocks "
            f"({num_blocks} = gen_length {gen_length} / block_length {block_length})"
        )
    return num_blocks


def build_canvas(
    prompts: Sequence[Sequence[int]] | Sequence[torch.Tensor],
    gen_length: int,
    mask_id: int,
    pad_id: int,
    device: torch.device,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Left-pad the prompts and append `gen_length` masks.

    Returns tokens [b, l], attention mask [b, l] (None when no row is padded) and the prompt width.
    A prompt token outside [0, `vocab_size`) is refused by name (the embedding would raise a bare
    `IndexError`).
    """
    if isinstance(prompts, (str, torch.Tensor)) or not isinstance(prompts, Sequence):
        if not (isinstance(prompts, torch.Tensor) and prompts.dim() == 2):
            raise TypeError(f"`prompts` must be a list of token-id sequences, one per row (a [b, l] tensor "
                            f"also works), got {type(prompts).__name__}")
    def scalar(p) -> bool:  # one token id: a Python / numpy int or a 0-d tensor
        return isinstance(p, numbers.Integral) or (isinstance(p, torch.Tensor) and p.dim() == 0)

    if len(prompts) and all(scalar(p) for p in prompts):
        raise TypeError("`prompts` is a flat list of token ids; give one sequence per row: [ids] for one prompt "
                        f"(it would decode {len(prompts)} one-token prompts)")
    rows = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            raise TypeError(f"prompt {i} is text ({p[:40]!r}); `generate` takes token ids: tokenize it first "
                            "(`depmask.tasks.chat.encode_prompt(text, tokenizer, chat=None)`)")
        try:
            t = torch.as_tensor(p)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"prompt {i} ({type(p).__name__}) is not a sequence of token ids ({err})") from None
        if t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):  # `[]` is float
            raise TypeError(f"prompt {i} holds {t.dtype} values; token ids are ints")
        if sum(n > 1 for n in t.shape) > 1:  # `[prompts]`: a whole batch in one row was read as one prompt
            raise TypeError(f"prompt {i} has shape {tuple(t.shape)}; each prompt is one sequence of token ids "
                            "(a batch is a list of them, or a [b, l] tensor)")
        rows.append(t.to(torch.long).flatten().tolist())
    if not rows:
        raise ValueError("`prompts` is empty: give at least one prompt")
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width + gen_length), mask_id, dtype=torch.long)
    attn = torch.ones_like(tokens, dtype=torch.bool)
    for i, r in enumerate(rows):
        if mask_id in r:
            raise ValueError(f"prompt {i} contains the mask id ({mask_id}); prompts must be unmasked")
        bad = [t for t in r if t < 0 or (vocab_size is not None and t >= vocab_size)]
        if bad:
            span = "an id >= 0" if vocab_size is None else f"ids in [0, {vocab_size}) (the model's vocabulary)"
            raise ValueError(f"prompt {i} has token id {bad[0]}, outside the vocabulary; expected {span}")
        tokens[i, : width - len(r)] = pad_id
        attn[i, : width - len(r)] = False
        tokens[i, width - len(r) : width] = torch.tensor(r, dtype=torch.long)
    padded = not bool(attn.all())
    return tokens.to(device), (attn.to(device) if padded else None), width


@torch.inference_mode()
def generate(
    denoiser: Denoiser,
    prompts: Sequence[Sequence[int]] | Sequence[torch.Tensor],
    policy: Policy,
    *,
    gen_length: int = 64,
    block_length: int | None = None,
    steps: int | None = None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    stop_at_eos: bool = False,
    pad_id: int | None = None,
    compile_select: bool | str = False,
) -> DecodeResult:
    """Decode `gen_length` tokens after each prompt with `policy`.

    Args:
        denoiser: the model (`Denoiser` protocol: `HFDenoiser`, or a stand-in).
        prompts: token id sequences, any lengths (left-padded into one batch), or a [b, l] tensor.
        policy: which masked positions each forward commits (`build_policy(name, **knobs)`).
        gen_length: answer tokens after each prompt.
        block_length: semi-autoregressive block size; default one block of `gen_length`.
        steps: total step budget over all blocks (used by budgeted policies such as
            `low_confidence`); default `gen_length`, i.e. one token per step.
        temperature: 0 = argmax; > 0 = Gumbel-max sampling in float64.
        generator: a seeded `torch.Generator` on the model's device for the sampling noise and for
            policies that draw positions (`random`); None: torch's global generator.
        logits_eos_inf: no id of the denoiser's `eos_ids` can be a candidate (LLaDA's option of that
            name bans its EOS id alone; `eos_ids` also holds end-of-turn ids such as `<|eot_id|>`,
            which are banned too). Applied to a copy of the logits: a probing policy's baseline
            (`block_log_probs`) reads them unbanned, as its probe forwards do.
        confidence_eos_eot_inf: positions whose candidate is one of `eos_ids` get confidence 0, so
            they are committed last (the intent of LLaDA's option of that name) by policies that
            rank by confidence; `margin`, `entropy`, `entropy_bound` and `random` do not (warned).
        stop_at_eos: a row stops once it has committed an EOS with everything before it
            unmasked; its remaining masks are filled with that EOS and are not counted as
            committed (`commit_step` 0). Off by default: LLaDA fills the whole canvas.
        pad_id: the id left padding is filled with (attention-masked; default the first of the
            denoiser's `eos_ids`, else 0).
        compile_select: run `policy.select` compiled: True or "jit" with `torch.compile`
            (`decoding/compile.py`), "aot" ahead of time with AOTInductor (`decoding/aot.py`;
            policies that declare `state_fields`: the dependency-guided ones) — fewer, fused
            operations per step after a one-off compile. Refused for policies that probe the
            model (the oracle).

    Returns:
        A `DecodeResult`: the canvas (`tokens`, `generated`), each answer token's forward
        (`commit_step`), forwards per row (`nfe`), and `summary()` (NFE, TPF, AFP, Kendall τ, ...).
    """
    block_length = gen_length if block_length is None else block_length
    steps = gen_length if steps is None else steps
    for name, value in (("gen_length", gen_length), ("block_length", block_length), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` ({value!r}) must be an int")
    num_blocks = check_lengths(gen_length, block_length, steps)
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature >= 0 \
            or temperature == float("inf"):  # NaN fails the comparison; True is not 1.0
        raise ValueError(f"`temperature` ({temperature!r}) must be a finite number >= 0")
    for name, value in (("logits_eos_inf", logits_eos_inf), ("confidence_eos_eot_inf", confidence_eos_eot_inf),
                        ("stop_at_eos", stop_at_eos)):
        if not isinstance(value, bool):  # "no" read as true
            raise TypeError(f"`{name}` ({value!r}) must be True or False")
    if not isinstance(policy, Policy):
        raise TypeError(f"`policy` must be a depmask Policy, got {type(policy).__name__}")
    if hasattr(policy, "bind"):  # e.g. a learned scorer refuses a model it was not trained for
        policy.bind(denoiser)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__} "
                        "(seed one: torch.Generator(device).manual_seed(seed))")
    mode = compile_mode(compile_select)
    select = policy.select if mode is None else compiled_select(policy, mode)
    eos_ids = tuple(denoiser.eos_ids)
    if (logits_eos_inf or confidence_eos_eot_inf or stop_at_eos) and not eos_ids:
        raise ValueError("an EOS option is set but the denoiser has no `eos_ids`")
    if confidence_eos_eot_inf and not policy.ranks_by_confidence:
        warnings.warn(f"`confidence_eos_eot_inf` zeroes the confidence of EOS candidates, which policy "
                      f"{policy.name!r} does not rank by (margin, entropy or chance): it changes nothing here",
                      stacklevel=2)
    mask_id = denoiser.mask_id
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0
    vocab = getattr(denoiser, "vocab_size", None)
    if isinstance(pad_id, bool) or not isinstance(pad_id, numbers.Integral) or pad_id < 0 or \
            (vocab is not None and pad_id >= vocab):
        raise ValueError(f"`pad_id` ({pad_id!r}) must be a token id (an int) in "
                         f"[0, {vocab if vocab is not None else 'vocab'})")
    pad_id = int(pad_id)  # a NumPy integer too
    steps_per_block = steps // num_blocks

    tokens, attn, width = build_canvas(
        prompts, gen_length, mask_id, pad_id, denoiser.device, vocab_size=getattr(denoiser, "vocab_size", None)
    )
    if getattr(denoiser, "logits_shift", False):  # Dream: column i is predicted at row i - 1
        own = attn[:, :width].sum(dim=1) if attn is not None else torch.full((tokens.shape[0],), width)
        empty = (own == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"prompt {empty[0]} is empty, and this model predicts each token from the position "
                             "before it (logits_shift): its first masked token would have no prediction; give "
                             "at least one prompt token (e.g. its BOS)")
    b = tokens.shape[0]
    nfe = torch.zeros(b, dtype=torch.long, device=tokens.device)  # [b]
    probe_nfe = torch.zeros(b, dtype=torch.long, device=tokens.device)  # [b]
    commit_step = torch.zeros(b, gen_length, dtype=torch.long, device=tokens.device)  # [b, g]
    live = torch.ones(b, dtype=torch.bool, device=tokens.device)  # [b]
    eos_tensor = torch.tensor(eos_ids, dtype=torch.long, device=tokens.device)
    keys = attn.sum(dim=1) if attn is not None else torch.full_like(nfe, tokens.shape[1])  # [b] unpadded lengths
    forwards = [0]  # a list so that the probe closure can count too
    start = time.perf_counter()

    for blk in range(num_blocks):
        s, e = width + blk * block_length, width + (blk + 1) * block_length
        block_masked = (tokens[:, s:e] == mask_id).sum(dim=1)  # [b]
        step = 0
        while True:
            in_block = tokens[:, s:e] == mask_id  # [b, c]
            rows = (live & in_block.any(dim=1)).nonzero().squeeze(1)  # [b']
            if rows.numel() == 0:
                break
            x = tokens[rows]  # [b', l]
            out = denoiser(
                x,
                None if attn is None else attn[rows],
                need_hidden=policy.needs_hidden,
                need_attention=policy.needs_attention,
            )
            forwards[0] += 1
            nfe[rows] += 1
            state = step_state(
                out, x, in_block[rows], s, e, mask_id=mask_id, temperature=temperature, generator=generator,
                eos=eos_tensor, logits_eos_inf=logits_eos_inf, confidence_eos_eot_inf=confidence_eos_eot_inf,
            )
            state.step, state.steps_per_block, state.block = step, steps_per_block, blk
            state.block_masked = block_masked[rows]
            state.rows, state.keys = rows, keys[rows]
            if policy.needs_probe:
                state.block_log_probs = torch.log_softmax(out.logits[:, s:e].float(), dim=-1)
                state.probe = _probe(denoiser, attn, rows, nfe, probe_nfe, forwards)
            del out  # the canvas's [b', l, v] logits: not alive through the probes or the next forward
            commit = select(state)  # [b', l]
            _check_commit(policy, commit, state.mask)
            committed = torch.where(commit, state.x0, x)
            tokens[rows] = committed
            gen_commit = commit[:, width:]  # [b', g]
            commit_step[rows] = torch.where(gen_commit, nfe[rows, None], commit_step[rows])
            if stop_at_eos:
                live[rows] &= ~_finished_at_eos(committed[:, width:], mask_id, eos_tensor)
            step += 1
            del state, commit, committed  # nor this step's hidden states and statistics

    if stop_at_eos:  # rows that stopped early: fill what is left after their first EOS
        gen = tokens[:, width:]
        fill = _first_eos_value(gen, eos_tensor, pad_id)  # [b]
        tokens[:, width:] = torch.where(gen == mask_id, fill[:, None], gen)
    if tokens.is_cuda:
        torch.cuda.synchronize(tokens.device)
    return DecodeResult(
        tokens=tokens,
        prompt_width=width,
        commit_step=commit_step,
        nfe=nfe,
        forwards=forwards[0],
        probe_nfe=probe_nfe,
        seconds=time.perf_counter() - start,
        attention_mask=attn,
    )


def _probe(denoiser, attn, rows, nfe, probe_nfe, forwards):
    """The counted extra-forward function handed to a probing policy for one step."""

    def probe(copies: torch.Tensor, local_rows: torch.Tensor) -> torch.Tensor:  # [n, l] → [n, l, v]
        global_rows = rows[local_rows]
        out = denoiser(copies, None if attn is None else attn[global_rows])
        forwards[0] += 1
        ones = torch.ones_like(global_rows)
        nfe.index_add_(0, global_rows, ones)
        probe_nfe.index_add_(0, global_rows, ones)
        return out.logits

    return probe


def step_state(
    out,
    x: torch.Tensor,  # [b, l] the canvas of this forward
    in_block: torch.Tensor,  # [b, c] bool: masked positions of the block
    s: int,
    e: int,
    *,
    mask_id: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    eos: torch.Tensor | None = None,  # EOS ids, when an EOS option is set
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
) -> StepState:
    """The `StepState` of one forward's output `out`, as the loop builds it before
    `policy.select`: the block's candidate tokens and their confidence, entropy and margin
    (`sampling.py`), the EOS options applied. Step counters are left at their defaults (the
    loop sets them). Benchmarks replay it to time a selection where the loop runs it."""
    logits = out.logits[:, s:e].float()  # [b, c, v]: a view of the model's logits when they are float32
    if logits_eos_inf:  # out of place: the oracle's baseline reads `out.logits` unbanned, as its probes are
        logits = logits.index_fill(-1, eos, float("-inf"))
    x0_blk = gumbel_argmax(logits, temperature, generator, forbid=mask_id)  # [b, c]
    raw, ent, margin = token_statistics(logits, x0_blk)
    conf = raw.masked_fill(torch.isin(x0_blk, eos), 0.0) if confidence_eos_eot_inf else raw
    return _state(x, in_block, x0_blk, conf, ent, margin, s, e, out, generator, raw)


def _state(x, in_block, x0_blk, conf, ent, margin, s, e, out, generator, raw) -> StepState:
    """Lift block-column statistics onto the full canvas (zeros outside the block)."""
    b, l = x.shape
    mask = torch.zeros(b, l, dtype=torch.bool, device=x.device)
    mask[:, s:e] = in_block
    x0 = x.clone()
    x0[:, s:e] = torch.where(in_block, x0_blk, x[:, s:e])

    def full(t: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(b, l, dtype=torch.float64, device=x.device)
        z[:, s:e] = t
        return z

    return StepState(
        tokens=x,
        mask=mask,
        x0=x0,
        confidence=full(conf),
        entropy=full(ent),
        margin=full(margin),
        step=0,
        steps_per_block=1,
        block=0,
        block_start=s,
        block_end=e,
        block_masked=mask.sum(1),
        hidden=out.hidden,
        attention=out.attention,
        generator=generator,
        raw_confidence=full(raw),  # its own tensor, also without the EOS option (one input per field)
    )


def _check_commit(policy: Policy, commit: torch.Tensor, mask: torch.Tensor) -> None:
    if commit.shape != mask.shape or commit.dtype != torch.bool:
        raise RuntimeError(
            f"policy {policy!r} returned {tuple(commit.shape)} {commit.dtype}; "
            f"expected a bool mask of shape {tuple(mask.shape)}"
        )
    if bool((commit & ~mask).any()):
        raise RuntimeError(f"policy {policy!r} committed a position that is not masked")
    if bool((mask.any(dim=1) & ~commit.any(dim=1)).any()):
        raise RuntimeError(f"policy {policy!r} committed nothing in a row that has masks left")


def _finished_at_eos(gen: torch.Tensor, mask_id: int, eos: torch.Tensor) -> torch.Tensor:
    """[b] bool: an EOS is committed and every position before the first one is unmasked."""
    is_eos = torch.isin(gen, eos)  # [b, g]
    masked = gen == mask_id
    g = gen.shape[1]
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(is_eos[:, 0], g, dtype=torch.long))
    before = torch.arange(g, device=gen.device)[None, :] < first[:, None]
    return is_eos.any(1) & ~(masked & before).any(1)


def _first_eos_value(gen: torch.Tensor, eos: torch.Tensor, default: int) -> torch.Tensor:
    is_eos = torch.isin(gen, eos)
    first = is_eos.float().argmax(1)
    val = gen.gather(1, first[:, None]).squeeze(1)
    return torch.where(is_eos.any(1), val, torch.full_like(val, default))
