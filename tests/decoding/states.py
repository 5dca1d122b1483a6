"""Hand-made decoding states, a stand-in head and a small real one, shared by the decoding tests."""

import torch

from depmask.decoding import StepState
from depmask.predictor import DependencyHead


class FakeHead:
    """Stands in for a trained `DependencyHead`: influence = sigmoid(h_i · h_j), valid pairs only."""

    def predict(self, hidden, positions, valid, confidence=None, entropy=None):
        pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(valid.shape[1], dtype=torch.bool)
        return torch.sigmoid(hidden.float() @ hidden.float().transpose(1, 2)) * pair

    def __repr__(self) -> str:  # stable test ids
        return "FakeHead()"


def random_state(seed: int, b: int = 4, l: int = 20, block=(6, 18), step: int = 0) -> StepState:
    g = torch.Generator().manual_seed(seed)
    s, e = block
    mask = torch.zeros(b, l, dtype=torch.bool)
    mask[:, s:e] = torch.rand(b, e - s, generator=g) < 0.7
    mask[0, s:e] = False  # a finished row
    mask[1, s:e] = True  # a full row
    probs = torch.rand(b, l, 5, generator=g).softmax(-1).double()
    conf, x0 = probs.max(-1)
    entropy = -(probs * probs.log()).sum(-1)
    top2 = probs.topk(2, -1).values
    return StepState(
        tokens=torch.where(mask, 99, torch.randint(0, 5, (b, l), generator=g)),
        mask=mask,
        x0=torch.where(mask, x0, 0),
        confidence=conf,
        entropy=entropy,
        margin=top2[..., 0] - top2[..., 1],
        step=step,
        steps_per_block=4,
        block=0,
        block_start=s,
        block_end=e,
        block_masked=mask.sum(1) + 2,
        hidden=torch.randn(b, l, 8, generator=g),
        attention=torch.rand(b, l, l, generator=g).softmax(-1),
        generator=torch.Generator().manual_seed(seed),
    )


def one_row_state(conf, *, prompt: int, mask=None, attention=None, step: int = 0) -> StepState:
    """One row: `prompt` unmasked canvas positions, then a block holding `conf`."""
    c = len(conf)
    l = prompt + c
    full = torch.zeros(1, l, dtype=torch.bool)
    full[0, prompt:] = torch.ones(c, dtype=torch.bool) if mask is None else torch.tensor(mask, dtype=torch.bool)
    confidence = torch.zeros(1, l, dtype=torch.float64)
    confidence[0, prompt:] = torch.tensor(conf, dtype=torch.float64)
    zeros = torch.zeros(1, l, dtype=torch.float64)
    return StepState(tokens=torch.where(full, 99, 1), mask=full, x0=torch.zeros(1, l, dtype=torch.long),
                     confidence=confidence, entropy=zeros, margin=zeros, step=step, steps_per_block=c, block=0,
                     block_start=prompt, block_end=l, block_masked=full.sum(1), attention=attention)


def small_head(den):
    torch.manual_seed(0)
    return DependencyHead(hidden_size=den.hidden_size, dim=16, layers=1, heads=2, max_distance=16,
                          base_fingerprint=den.fingerprint).eval()


def assert_same(a, b, name):
    assert torch.equal(a.tokens, b.tokens), name
    assert torch.equal(a.commit_step, b.commit_step), name
    assert torch.equal(a.nfe, b.nfe), name
