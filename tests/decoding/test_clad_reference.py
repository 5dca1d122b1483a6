"""`clad` against a plain NumPy transcription of CLAD's selection rule (Qi et al., arXiv 2605.29607,
as specified in issue 6): on hand-made attention maps, on random states and along real decodes.

The transcription is written the way the rule reads, one row at a time, with Python loops and
NumPy; nothing here imports the selector. Rule, per row and step:
1. candidates: masked positions of the block with confidence ≥ τ, plus the most confident one;
2. CICs: maximal runs of consecutive candidate indices;
3. S = max(A, Aᵀ) over the block, zero diagonal;
4. W[a, b] = max over rows i ∈ a of mean over columns j ∈ b of S[i, j]; W = max(W, Wᵀ);
5. edge a–b iff a and b are each other's top-1 and W[a, b] ≥ both row means (mean over the other
   clusters); with ≤ 2 clusters instead W[a, b] ≥ 1.2 / L, L = keys the query attends over;
   (a zero affinity is never an edge — only reachable with an all-zero map);
6. of each edge keep the larger cluster (ties: the one holding the higher confidence, then the
   left one); commit every kept cluster.
"""

import numpy as np
import pytest
import torch

from depmask.decoding import Policy, StepState, build_policy, generate
from tests.decoding.states import random_state


def clad_reference(conf, mask, attn_block, tau: float, keys: int) -> list[int]:
    """Block-relative positions CLAD commits for one row (see the module docstring)."""
    c = len(conf)
    masked = [i for i in range(c) if mask[i]]
    if not masked:
        return []
    top = max(masked, key=lambda i: (conf[i], -i))
    cand = [i for i in masked if conf[i] >= tau or i == top]
    clusters: list[list[int]] = []
    for i in cand:
        if clusters and clusters[-1][-1] == i - 1:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    k = len(clusters)
    a = np.asarray(attn_block, dtype=np.float64)
    s = np.maximum(a, a.T)
    np.fill_diagonal(s, 0.0)
    w = np.zeros((k, k))
    for x in range(k):
        for y in range(k):
            w[x, y] = max(np.mean([s[i, j] for j in clusters[y]]) for i in clusters[x])
    w = np.maximum(w, w.T)
    keep = set(range(k))
    if k >= 2:
        top1 = {x: max((y for y in range(k) if y != x), key=lambda y: (w[x, y], -y)) for x in range(k)}
        mean = {x: np.mean([w[x, y] for y in range(k) if y != x]) for x in range(k)}
        for x in range(k):
            y = top1[x]
            if x < y and top1[y] == x:
                weight = w[x, y]
                strong = weight >= 1.2 / keys if k <= 2 else (weight >= mean[x] and weight >= mean[y])
                if strong and weight > 0:
                    def rank(u):
                        return (len(clusters[u]), max(conf[i] for i in clusters[u]), -u)
                    keep.discard(min(x, y, key=rank))
    return sorted(i for u in keep for i in clusters[u])


def hand_state(conf, attn_block, *, mask=None, prompt: int = 2, pad_keys: int = 0) -> StepState:
    """One row: `prompt` unmasked positions, then the block; attention 0.01 everywhere except
    `attn_block` on the block and 0 on the first `pad_keys` keys (left padding)."""
    c = len(conf)
    l = prompt + c
    mask_blk = torch.ones(c, dtype=torch.bool) if mask is None else torch.tensor(mask, dtype=torch.bool)
    full = torch.zeros(1, l, dtype=torch.bool)
    full[0, prompt:] = mask_blk
    confidence = torch.zeros(1, l, dtype=torch.float64)
    confidence[0, prompt:] = torch.tensor(conf, dtype=torch.float64)
    attn = torch.full((1, l, l), 0.01)
    attn[0, prompt:, prompt:] = torch.tensor(attn_block, dtype=torch.float32)
    attn[0, :, :pad_keys] = 0.0
    return StepState(
        tokens=torch.where(full, 99, 1), mask=full, x0=torch.zeros(1, l, dtype=torch.long), confidence=confidence,
        entropy=torch.zeros(1, l, dtype=torch.float64), margin=torch.zeros(1, l, dtype=torch.float64), step=0,
        steps_per_block=c, block=0, block_start=prompt, block_end=l, block_masked=full.sum(1), attention=attn,
    )


def committed(policy, state) -> list[int]:
    s = state.block_start
    return [i - s for i in policy.select(state)[0].nonzero().flatten().tolist()]


def block_map(c: int, pairs: dict[tuple[int, int], float]) -> list[list[float]]:
    a = [[0.01] * c for _ in range(c)]
    for (i, j), v in pairs.items():
        a[i][j] = v
    return a


CONF3 = [0.95, 0.93, 0.2, 0.91, 0.3, 0.97, 0.96, 0.94]  # τ = 0.9 → CICs {0,1} {3} {5,6,7}


@pytest.mark.parametrize(
    ("conf", "pairs", "extra", "expected", "why"),
    [
        (CONF3, {(0, 6): 0.5}, {}, [3, 5, 6, 7], "mutual top-1 {0,1}–{5,6,7}: the larger cluster stays"),
        (CONF3, {(3, 6): 0.5}, {}, [0, 1, 5, 6, 7], "mutual top-1 {3}–{5,6,7}: the singleton goes"),
        (CONF3, {}, {}, [0, 1, 5, 6, 7], "flat attention: top-1 ties go to the first cluster, so "
                                         "{0,1}–{3} are mutual; the larger stays"),
        (CONF3, {(0, 6): 0.5, (1, 3): 0.6}, {}, [0, 1, 5, 6, 7], "{0,1}'s top-1 is {3}; {3}'s too"),
        ([0.95, 0.93, 0.2, 0.2, 0.2, 0.2, 0.96, 0.94], {(0, 6): 0.5}, {},
         [6, 7], "two clusters of equal size: the more confident stays (0.255 ≥ 1.2/10)"),
        ([0.95, 0.93, 0.2, 0.2, 0.2, 0.2, 0.96, 0.94], {(0, 6): 0.2}, {},
         [0, 1, 6, 7], "two clusters, affinity 0.105 < 1.2 / 10: no edge"),
        ([0.95, 0.93, 0.2, 0.2, 0.2, 0.2, 0.96, 0.94], {(0, 6): 0.25}, {},
         [6, 7], "two clusters, affinity 0.13 ≥ 1.2 / 10"),
        ([0.95, 0.93, 0.2, 0.2, 0.2, 0.2, 0.96, 0.94], {(0, 6): 0.25}, {"pad_keys": 2},
         [0, 1, 6, 7], "the same with 2 padded keys: L = 8, 0.13 < 1.2 / 8"),
        ([0.5, 0.4, 0.3, 0.6, 0.2, 0.1, 0.3, 0.2], {(0, 3): 0.9}, {},
         [3], "nothing reaches τ: only the forced most confident position"),
        (CONF3, {(0, 6): 0.5}, {"mask": [1, 1, 1, 0, 1, 1, 1, 1]},
         [5, 6, 7], "{3} already committed: two clusters {0,1}, {5,6,7}, 0.255 ≥ 1.2 / 10"),
    ],
)
def test_hand_made_attention_maps(conf, pairs, extra, expected, why):
    state = hand_state(conf, block_map(len(conf), pairs), **extra)
    got = committed(build_policy("clad", threshold=0.9), state)
    keys = int((state.attention[0, 2] > 0).sum())
    mask = extra.get("mask", [1] * len(conf))
    want = clad_reference(conf, mask, block_map(len(conf), pairs), 0.9, keys)
    assert want == expected, why  # the transcription reads the rule as intended
    assert got == expected, why


def check_rows(policy, state: StepState, tau: float) -> None:
    got = policy.select(state)
    s, e = state.block_start, state.block_end
    for r in range(state.mask.shape[0]):
        conf, mask = state.confidence[r, s:e].tolist(), state.mask[r, s:e].tolist()
        top = s + max((i for i in range(e - s) if mask[i]), key=lambda i: (conf[i], -i), default=0)
        keys = int((state.attention[r, top] > 0).sum())
        want = clad_reference(conf, mask, state.attention[r, s:e, s:e].double().numpy(), tau, keys)
        assert [i - s for i in got[r].nonzero().flatten().tolist()] == want, (r, tau)


@pytest.mark.parametrize("tau", [0.0, 0.2, 0.35, 0.5, 0.9])
@pytest.mark.parametrize("seed", range(8))
def test_random_states(tau, seed):
    state = random_state(seed, b=6, l=24, block=(4, 20))
    check_rows(build_policy("clad", threshold=tau), state, tau)


def test_random_states_with_sharp_attention():
    """Peaked attention makes edges more frequent than the near-uniform softmax above."""
    for seed in range(10):
        state = random_state(seed, b=6, l=24, block=(4, 20))
        g = torch.Generator().manual_seed(seed)
        state.attention = (torch.randn(6, 24, 24, generator=g) * 3).softmax(-1)
        check_rows(build_policy("clad", threshold=0.3), state, 0.3)


class Checked(Policy):
    """Runs `clad` inside the real loop and checks every step against the transcription."""

    name = "checked_clad"
    needs_attention = True

    def __init__(self, tau: float):
        self.tau, self.inner, self.steps = tau, build_policy("clad", threshold=tau), 0

    def select(self, state):
        check_rows(self.inner, state, self.tau)
        self.steps += 1
        return self.inner.select(state)


@pytest.mark.parametrize("tau", [0.3, 0.6, 0.9])
def test_along_real_decodes(mock_denoiser, prompts, tau):
    policy = Checked(tau)
    res = generate(mock_denoiser, prompts, policy, gen_length=16, block_length=8)
    assert policy.steps >= 2 and not (res.generated == mock_denoiser.mask_id).any()
    again = generate(mock_denoiser, prompts, build_policy("clad", threshold=tau), gen_length=16, block_length=8)
    assert torch.equal(res.tokens, again.tokens)
