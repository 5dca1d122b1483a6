"""Independent transcriptions of the published decoding rules that depmask claims to follow.

Shapes: `b` batch, `l` canvas, `v` vocabulary, `p` prompt length, `g` gen_length.

Each function is written from reading the named reference source and keeps its observable
behaviour (what is committed, when, and how many forwards are made), including its quirks; the
code itself is ours. They are deliberately written the way the references are: per-row Python
loops, `torch.topk` for selection, the reference's dtypes. Nothing here imports depmask.

Sources:
- LLaDA, github.com/ML-GSAI/LLaDA `generate.py`: `add_gumbel_noise`, `get_num_transfer_tokens`,
  `generate`.
- Fast-dLLM, github.com/NVlabs/Fast-dLLM `llada/generate.py`: `get_transfer_index`,
  `get_transfer_index_dynamic`, `generate` (the no-cache loop).
- DUS, github.com/omerlux/DUS `generate.py`: `dilated_unmask_levels`, `merge_last_level`,
  `generate_scheduled` (scheduler='dilated'), and its EB-Sampler port `generate_eb_sampler`.
- Dream, `generation_utils.py` shipped with Dream-org/Dream-v0-*-7B: `sample_tokens` and the
  `_sample` loop (algorithms `topk_margin` and `entropy`).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

NEG_INF = float("-inf")


class LogitsModel:
    """Wrap a depmask-style denoiser so that `model(x).logits` works as the references expect."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.device = denoiser.device
        self.calls = 0

    def __call__(self, x: torch.Tensor):
        self.calls += 1
        return SimpleNamespace(logits=self.denoiser(x).logits)


def _canvas(prompt: torch.Tensor, gen_length: int, mask_id: int) -> torch.Tensor:
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    return x


# --------------------------------------------------------------------------------------------
# LLaDA
# --------------------------------------------------------------------------------------------


def llada_noisy_scores(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """LLaDA's Gumbel trick: exp(logits) / (−log u)^T in float64. It always draws u, even at
    T = 0, where the divisor is 1 and the argmax is the argmax of the logits."""
    z = logits.to(torch.float64)
    u = torch.rand_like(z, dtype=torch.float64)
    return z.exp() / (-torch.log(u)) ** temperature


def llada_schedule(mask_count: torch.Tensor, steps: int) -> torch.Tensor:
    """[b, steps]: `mask_count // steps` each, plus one for the first `mask_count % steps`."""
    counts = []
    for n in mask_count.tolist():
        q, r = divmod(int(n), steps)
        counts.append([q + 1 if i < r else q for i in range(steps)])
    return torch.tensor(counts, dtype=torch.long)


@torch.no_grad()
def llada_generate(model, prompt, *, steps, gen_length, block_length, mask_id, temperature=0.0,
                   schedule=llada_schedule):
    """LLaDA `generate` with remasking='low_confidence' and cfg_scale=0. Returns the canvas [b, l].

    `schedule` is a hook so a test can plant a deliberately wrong schedule."""
    x = _canvas(prompt, gen_length, mask_id)
    p = prompt.shape[1]
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    per_block = steps // num_blocks
    for blk in range(num_blocks):
        end = p + (blk + 1) * block_length
        counts = schedule((x[:, p + blk * block_length : end] == mask_id).sum(1), per_block)
        for i in range(per_block):
            masked = x == mask_id
            logits = model(x).logits
            x0 = llada_noisy_scores(logits, temperature).argmax(-1)
            prob = torch.softmax(logits.to(torch.float64), dim=-1)
            x0_p = prob.gather(-1, x0[..., None])[..., 0]
            x0_p[:, end:] = NEG_INF  # nothing right of the current block
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, x0_p, torch.full_like(x0_p, NEG_INF))
            pick = torch.zeros_like(masked)
            for j in range(x.shape[0]):
                pick[j, torch.topk(conf[j], k=int(counts[j, i])).indices] = True
            x[pick] = x0[pick]
    return x


# --------------------------------------------------------------------------------------------
# Fast-dLLM
# --------------------------------------------------------------------------------------------


def fastdllm_threshold_select(conf: torch.Tensor, mask: torch.Tensor, threshold: float,
                              strict: bool = False) -> torch.Tensor:
    """`get_transfer_index` with `threshold` set, from the confidence on: rank every selectable
    position with `topk`, keep rank 0 unconditionally and drop any later rank whose confidence
    is `< threshold`. `conf` is −inf where not selectable. `strict=True` is a wrong variant
    (drops `<= threshold`) used only to show the tests can tell the two apart."""
    out = torch.zeros_like(mask)
    for j in range(conf.shape[0]):
        k = int(mask[j].sum())
        idx = torch.topk(conf[j], k=k).indices
        out[j, idx] = True
        for r in range(1, k):
            c = conf[j, idx[r]]
            if (c <= threshold) if strict else (c < threshold):
                out[j, idx[r]] = False
    return out


def fastdllm_factor_select(conf: torch.Tensor, mask: torch.Tensor, factor: float,
                           bump_last: bool = True) -> torch.Tensor:
    """`get_transfer_index_dynamic`, from the confidence on. For rank n (1-based) the bar is
    1 − factor / (n + 1), except rank 1 whose bar is −1. Scan the sorted confidences and stop at
    the first 0-based rank i that misses its bar; commit the top i. The reference then adds one
    when the scan stopped at i == 0 or at i == last (the latter also when nothing missed, since
    the loop variable ends on the last index), so a miss at the very last rank commits all.
    `bump_last=False` is a wrong variant without that edge rule."""
    out = torch.zeros_like(mask)
    for j in range(conf.shape[0]):
        n = int(mask[j].sum())
        bars = [1 - factor / (r + 1) for r in range(1, n + 1)]
        bars[0] = -1
        ranked = torch.sort(conf[j][mask[j]], descending=True).values
        stop = 0
        for stop in range(n):
            if ranked[stop] < bars[stop]:
                break
        if stop == 0 or (bump_last and stop == n - 1):
            stop += 1
        out[j, torch.topk(conf[j], k=stop).indices] = True
    return out


def fastdllm_transfer_index(logits, mask_index, x, *, threshold=None, factor=None,
                            num_transfer=None):
    """`get_transfer_index` / `get_transfer_index_dynamic` at temperature 0 with
    remasking='low_confidence', from the logits. Returns (x0, transfer)."""
    x0 = logits.argmax(-1)  # add_gumbel_noise returns the logits unchanged at T = 0
    prob = torch.softmax(logits.to(torch.float64), dim=-1)
    x0_p = prob.gather(-1, x0[..., None])[..., 0]
    x0 = torch.where(mask_index, x0, x)
    conf = torch.where(mask_index, x0_p, torch.full_like(x0_p, NEG_INF))
    if factor is not None:
        return x0, fastdllm_factor_select(conf, mask_index, factor)
    if threshold is not None:
        return x0, fastdllm_threshold_select(conf, mask_index, threshold)
    out = torch.zeros_like(mask_index)
    for j in range(conf.shape[0]):
        out[j, torch.topk(conf[j], k=int(num_transfer[j])).indices] = True
    return x0, out


@torch.no_grad()
def fastdllm_generate(model, prompt, *, steps, gen_length, block_length, mask_id,
                      threshold=None, factor=None):
    """Fast-dLLM's no-cache `generate` at temperature 0: per block, forward until the block has
    no mask left in any row. Returns (canvas [b, l], nfe = batched forwards)."""
    x = _canvas(prompt, gen_length, mask_id)
    p = prompt.shape[1]
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    per_block = steps // num_blocks
    nfe = 0
    for blk in range(num_blocks):
        start = p + blk * block_length
        end = start + block_length
        counts = llada_schedule((x[:, start:end] == mask_id).sum(1), per_block)
        i = 0
        while True:
            nfe += 1
            mask_index = x == mask_id
            logits = model(x).logits
            mask_index[:, end:] = False
            budget = counts[:, i] if threshold is None and factor is None else None
            x0, transfer = fastdllm_transfer_index(logits, mask_index, x, threshold=threshold,
                                                   factor=factor, num_transfer=budget)
            x[transfer] = x0[transfer]
            i += 1
            if int((x[:, start:end] == mask_id).sum()) == 0:
                break
    return x, nfe


# --------------------------------------------------------------------------------------------
# EB-Sampler (entropy-bounded unmasking), as ported in omerlux/DUS `generate_eb_sampler`
# --------------------------------------------------------------------------------------------


def eb_select(entropy: torch.Tensor, mask: torch.Tensor, gamma: float,
              minus_max: bool = True) -> torch.Tensor:
    """Sort the selectable entropies ascending; k = number of sorted ranks whose running sum
    minus running max is <= gamma, clamped to [1, selectable]; commit the first k. (The reference
    sorts with the default, unstable `torch.sort`; ties may therefore resolve either way.)
    `minus_max=False` is a wrong variant (running sum alone <= gamma)."""
    out = torch.zeros_like(mask)
    for j in range(entropy.shape[0]):
        n = int(mask[j].sum())
        if n == 0:
            continue
        h = torch.where(mask[j], entropy[j], torch.full_like(entropy[j], float("inf")))
        h_sorted, ids = torch.sort(h)
        keep = h_sorted != float("inf")
        h_sorted, ids = h_sorted[keep], ids[keep]
        acc = torch.cumsum(h_sorted, 0)
        excess = acc - torch.cummax(h_sorted, 0).values if minus_max else acc
        k = int((excess <= gamma).sum())
        k = max(1, min(k, n))
        out[j, ids[:k]] = True
    return out


@torch.no_grad()
def eb_generate(model, prompt, *, gen_length, block_length, mask_id, gamma):
    """Blockwise EB-Sampler at temperature 0, entropy in nats from the float64 softmax, forwards
    until each block is complete (no step cap). Returns (canvas, nfe)."""
    x = _canvas(prompt, gen_length, mask_id)
    p = prompt.shape[1]
    nfe = 0
    for blk in range(gen_length // block_length):
        start = p + blk * block_length
        end = start + block_length
        while bool((x[:, start:end] == mask_id).any()):
            nfe += 1
            logits = model(x).logits
            x0 = logits.argmax(-1)
            logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
            ent = -(logp.exp() * logp).sum(-1)
            sel = torch.zeros_like(x, dtype=torch.bool)
            sel[:, start:end] = x[:, start:end] == mask_id
            pick = eb_select(ent, sel, gamma)
            x[pick] = x0[pick]
    return x, nfe


# --------------------------------------------------------------------------------------------
# DUS, the dilated unmasking scheduler
# --------------------------------------------------------------------------------------------


def dus_dilated_levels(start: int, end: int, base: int = 2, skip_exp: int = 1) -> list[list[int]]:
    """`dilated_unmask_levels` over the inclusive range [start, end]."""
    if base < 1 or skip_exp < 1:
        raise ValueError("base and skip_exp must be >= 1")
    if base == 1:
        return [list(range(start, end + 1))]
    stride = (end - start + 1) // base**skip_exp
    levels: list[list[int]] = []
    seen: set[int] = set()
    while stride >= 1:
        this = [i for i in range(start, end + 1) if (i - start) % stride == 0 and i not in seen]
        if this:
            levels.append(this)
            seen.update(this)
        stride //= base
    left = [i for i in range(start, end + 1) if i not in seen]
    if left:
        levels.append(left)
    return levels


def dus_merge_last_level(levels: list[list[int]]) -> list[list[int]]:
    """`merge_last_level`: a last level shorter than the one before it joins that one."""
    if len(levels) >= 2 and len(levels[-1]) < len(levels[-2]):
        levels[-2].extend(levels[-1])
        levels.pop()
    return levels


def dus_block_levels(block_length: int, base: int, skip_exp: int, merge: bool = True):
    """Block-relative levels exactly as `generate_scheduled` builds them."""
    levels = dus_dilated_levels(0, block_length - 1, base, skip_exp)
    return dus_merge_last_level(levels) if merge else levels


@torch.no_grad()
def dus_generate(model, prompt, *, gen_length, block_length, mask_id, base=2, skip_exp=1,
                 confidence_threshold=0.3):
    """`generate_scheduled(scheduler='dilated', remasking='low_confidence')` at temperature 0,
    batch of one. One forward per level; the level's still-masked positions take the argmax; after
    every level but the last, the level's positions whose p(argmax) < threshold are set back to
    the mask (and no later level revisits them). Returns (canvas, nfe)."""
    x = _canvas(prompt, gen_length, mask_id)
    p = prompt.shape[1]
    nfe = 0
    for blk in range(gen_length // block_length):
        start = p + blk * block_length
        levels = dus_merge_last_level(
            dus_dilated_levels(start, start + block_length - 1, base, skip_exp)
        )
        for li, level in enumerate(levels):
            if not bool((x == mask_id).any()):
                break
            logits = model(x).logits
            nfe += 1
            x0 = logits.argmax(-1)
            for pos in level:
                if int(x[0, pos]) == mask_id:
                    x[0, pos] = x0[0, pos]
            if li < len(levels) - 1:
                prob = torch.softmax(logits.to(torch.float64), dim=-1)
                conf = prob.gather(-1, x0[..., None])[..., 0]
                for pos in level:
                    if conf[0, pos] < confidence_threshold:
                        x[0, pos] = mask_id
    return x, nfe


# --------------------------------------------------------------------------------------------
# Dream
# --------------------------------------------------------------------------------------------


def dream_timesteps(steps: int, eps: float = 1e-3) -> torch.Tensor:
    """Dream's `torch.linspace(1, eps, steps + 1)` — default dtype, i.e. float32."""
    return torch.linspace(1, eps, steps + 1)


def dream_count(num_mask: int | float, i: int, steps: int, eps: float = 1e-3) -> int:
    """Tokens Dream transfers at step i: int(n · (1 − s/t)) in float32, all that is left at the
    last step. `num_mask` is Dream's masked count averaged over the batch."""
    ts = dream_timesteps(steps, eps)
    n = torch.tensor(float(num_mask))  # float32, as `mask_index.sum() / batch`
    t, s = ts[i], ts[i + 1]
    return int(n * (1 - s / t)) if i < steps - 1 else int(n)


def dream_scores(probs: torch.Tensor, alg: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`sample_tokens` at temperature 0: x0 = argmax, and the ranking score: top-1 − top-2 for
    'topk_margin', Σ p·log(p + 1e-10) (negative entropy) for 'entropy', p(x0) for 'maskgit_plus'."""
    conf, x0 = probs.max(dim=-1)
    if alg == "topk_margin":
        top = torch.sort(probs, dim=-1, descending=True).values
        conf = top[..., 0] - top[..., 1]
    elif alg == "entropy":
        conf = (probs * torch.log(probs + 1e-10)).sum(-1)
    elif alg != "maskgit_plus":
        raise ValueError(alg)
    return conf, x0


def dream_select(score: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Dream's transfer: `topk` over the score (−inf where not masked); nothing when k == 0."""
    full = torch.where(mask, score, torch.full_like(score, NEG_INF))
    out = torch.zeros_like(mask)
    if k > 0:
        for j in range(score.shape[0]):
            out[j, torch.topk(full[j], k).indices] = True
    return out


@torch.no_grad()
def dream_generate(model, prompt, *, gen_length, steps, mask_id, alg, eps=1e-3):
    """Dream's `_sample` at temperature 0 (alg_temp 0, no top-p/top-k), one block, batch of one.
    The logit shift that Dream applies is the model's alignment and is left to the model (the
    mock is already aligned). Returns (canvas, per-step counts)."""
    x = _canvas(prompt, gen_length, mask_id)
    counts = []
    for i in range(steps):
        mask_index = x == mask_id
        logits = model(x).logits
        probs = torch.softmax(logits[mask_index], dim=-1)  # in the logits' dtype, as Dream
        score, x0 = dream_scores(probs, alg)
        k = dream_count(int(mask_index.sum()) / x.shape[0], i, steps, eps)
        counts.append(k)
        full = torch.full(x.shape, NEG_INF, dtype=score.dtype)
        full[mask_index] = score
        if k > 0:
            cand = torch.full_like(x, mask_id)
            cand[mask_index] = x0
            idx = torch.topk(full, k).indices  # [b, k]
            rows = torch.arange(x.shape[0])[:, None].expand_as(idx)
            x[rows, idx] = cand[rows, idx]
    return x, counts
