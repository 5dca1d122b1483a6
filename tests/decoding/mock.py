"""A mock denoiser with controlled, context-dependent logits for loop and policy tests.

Shapes: `b` batch, `l` sequence, `v` vocabulary, `d` hidden.

Each position's logits depend on its token, its position (counted from the first real token, so
left padding changes nothing) and the mean of the real tokens' embeddings, through fixed random
weights. Optional `bias` adds a fixed [v] vector to every row, to make some tokens (e.g. EOS)
likely on purpose.
"""

from __future__ import annotations

import torch

from depmask.models.denoiser import DenoiserOutput


class MockDenoiser:
    def __init__(self, vocab_size: int = 12, d: int = 8, seed: int = 0, scale: float = 3.0):
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size + 1  # the last id is the mask
        self.mask_id = vocab_size
        self.eos_ids = (vocab_size - 1,)
        self.hidden_size = d
        self.fingerprint = f"mock@local:{seed}"
        self.emb = torch.randn(self.vocab_size, d, generator=g)
        self.pos = torch.randn(512, d, generator=g)
        self.w = torch.randn(d, self.vocab_size, generator=g) * scale
        self.bias = torch.zeros(self.vocab_size)
        self.bias[self.mask_id] = -1e4  # never predict the mask token
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __call__(self, tokens, attention_mask=None, need_hidden=False, need_attention=False):
        self.calls += 1
        if attention_mask is None:
            attention_mask = torch.ones_like(tokens, dtype=torch.bool)
        am = attention_mask.bool()
        positions = (am.long().cumsum(1) - 1).clamp_min(0)  # [b, l]
        h = self.emb[tokens] + self.pos[positions]  # [b, l, d]
        ctx = (h * am[..., None]).sum(1) / am.sum(1, keepdim=True)  # [b, d]
        hidden = torch.tanh(h + ctx[:, None])  # [b, l, d]
        logits = hidden @ self.w + self.bias  # [b, l, v]
        attn = None
        if need_attention:
            scores = hidden @ hidden.transpose(1, 2)  # [b, l, l]
            attn = scores.masked_fill(~am[:, None, :], float("-inf")).softmax(-1)
        return DenoiserOutput(
            logits=logits.float(), hidden=hidden if need_hidden else None, attention=attn
        )


class Counting:
    """Wraps a denoiser: records the flags of each main forward and the rows of each probe forward."""

    def __init__(self, den):
        self.den, self.main, self.probe_rows = den, [], 0

    def __getattr__(self, name):
        return getattr(self.den, name)

    def __call__(self, tokens, attention_mask=None, need_hidden=None, need_attention=False):
        if need_hidden is None:  # the loop's probe passes no flags
            self.probe_rows += tokens.shape[0]
        else:
            self.main.append((tokens.shape[0], need_hidden, need_attention))
        return self.den(tokens, attention_mask, need_hidden=bool(need_hidden), need_attention=need_attention)
