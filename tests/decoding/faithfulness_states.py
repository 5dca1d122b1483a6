"""Random step states for the faithfulness tests, and the row-by-row comparison of a selection with
the selection of a reference rule, up to ties."""

from __future__ import annotations

import pytest
import torch

from depmask.decoding import StepState

PROMPTS = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 0, 2]]  # equal length: the references do not pad
B, L, V = 5, 24, 7  # rows, canvas length, vocabulary of the random states
BLOCK = (4, 20)
SEEDS = range(40)  # random states per comparison


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny; on a loaded 2-core machine an intra-op thread pool turns each
    small reduction into milliseconds of synchronisation. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_state(seed: int, *, ties: bool = False, one_hot: bool = False, step: int = 0,
               steps_per_block: int = 4) -> tuple[StepState, torch.Tensor]:
    """A random state and the probabilities [B, L, V] (float64) its statistics come from.

    Rows: 0 finished (no mask), 1 fully masked, 2 a single mask, 3-4 random. `ties` copies whole
    probability rows between masked positions (so confidence, entropy and margin all tie
    exactly), once onto the row's most confident position. `one_hot` makes two masked positions
    certain (confidence exactly 1, entropy exactly 0). Outside the mask the statistics are set
    to the most attractive values (confidence 1, entropy 0, margin 1): a policy must not read them.
    """
    g = torch.Generator().manual_seed(seed)
    s, e = BLOCK
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[:, s:e] = torch.rand(B, e - s, generator=g) < 0.6
    mask[0] = False
    mask[1, s:e] = True
    mask[2] = False
    mask[2, s + int(torch.randint(0, e - s, (1,), generator=g))] = True
    scale = (torch.rand(B, L, 1, generator=g) * 3 - 1).exp()  # 0.37 .. 7.4: flat to peaked
    probs = (torch.randn(B, L, V, generator=g) * scale).double().softmax(-1)
    for r in range(B):
        idx = mask[r].nonzero().squeeze(1)
        if idx.numel() < 3:
            continue
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        if ties:
            top = idx[probs[r, idx].max(-1).values.argmax()]
            other = perm[0] if perm[0] != top else perm[1]
            probs[r, other] = probs[r, top]  # a tie at the top
            probs[r, perm[2]] = probs[r, perm[1] if perm[1] != top else perm[0]]  # and another
        if one_hot:
            for pos in perm[-2:]:
                probs[r, pos] = 0.0
                probs[r, pos, int(torch.randint(0, V, (1,), generator=g))] = 1.0
    conf, x0 = probs.max(-1)
    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    top2 = probs.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    state = StepState(
        tokens=torch.where(mask, 99, torch.randint(0, V, (B, L), generator=g)),
        mask=mask,
        x0=torch.where(mask, x0, 0),
        confidence=conf.masked_fill(~mask, 1.0),
        entropy=entropy.masked_fill(~mask, 0.0),
        margin=margin.masked_fill(~mask, 1.0),
        step=step,
        steps_per_block=steps_per_block,
        block=0,
        block_start=s,
        block_end=e,
        block_masked=mask.sum(1),
        generator=torch.Generator().manual_seed(seed),
    )
    return state, probs


def state_with(confidence: list[float], entropy: list[float] | None = None) -> StepState:
    """A one-row state whose every position is masked, with the given statistics."""
    n = len(confidence)
    mask = torch.ones(1, n, dtype=torch.bool)
    conf = torch.tensor([confidence], dtype=torch.float64)
    ent = torch.tensor([entropy if entropy is not None else [0.0] * n], dtype=torch.float64)
    return StepState(tokens=torch.full((1, n), 99), mask=mask, x0=torch.zeros(1, n, dtype=torch.long),
                     confidence=conf, entropy=ent, margin=torch.zeros(1, n, dtype=torch.float64),
                     step=0, steps_per_block=1, block=0, block_start=0, block_end=n,
                     block_masked=torch.tensor([n]))


def masked_scores(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, score, torch.full_like(score, float("-inf")))


def same_up_to_ties(got: torch.Tensor, ref: torch.Tensor, score: torch.Tensor) -> bool:
    """Same number committed and the same multiset of scores committed, row by row."""
    return all(
        torch.equal(score[r][got[r]].sort().values, score[r][ref[r]].sort().values)
        for r in range(got.shape[0])
    )


def on_live_rows(state: StepState, ref_fn, *tensors: torch.Tensor, **kw) -> torch.Tensor:
    """Run a reference rule on the rows that still have masks (Fast-dLLM's dynamic rule cannot
    take an empty row); finished rows commit nothing."""
    live = state.mask.any(1)
    out = torch.zeros_like(state.mask)
    out[live] = ref_fn(*(t[live] for t in tensors), **kw)
    return out


def check_rows(got: torch.Tensor, state: StepState, score: torch.Tensor, what: str, ref_fn,
               *tensors: torch.Tensor, **kw):
    """The policy's commit equals `ref_fn(*tensors, **kw)` (up to ties in `score`)."""
    assert got.dtype == torch.bool and not (got & ~state.mask).any(), what
    assert not got[~state.mask.any(1)].any(), f"{what}: committed in a finished row"
    ref = on_live_rows(state, ref_fn, *tensors, **kw)
    assert same_up_to_ties(got, ref, score), (
        f"{what}\n depmask   {got.nonzero().tolist()}\n reference {ref.nonzero().tolist()}"
    )
    return ref
