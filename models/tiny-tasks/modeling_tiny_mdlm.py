"""The tiny MDLM: a LLaDA-shaped masked diffusion transformer (pre-norm, RoPE, SwiGLU, no causal
mask) written as a transformers `PreTrainedModel`.

Shapes: `b` batch, `l` sequence, `d` hidden, `h` heads, `e` head dim, `v` vocabulary.

Like LLaDA's own modeling code it calls `torch.nn.functional.scaled_dot_product_attention`
directly (looked up at call time), so depmask's attention capture exercises the same path it
uses for remote-code MDLMs. `output_attentions=True` switches to an explicit softmax and returns
every layer's `[b, h, l, l]` map (the eager reference that tests compare the capture against).
With an attention mask, RoPE positions count from the first real token, so left padding does
not change a row's predictions. This file is self-contained (torch + transformers only): it is
copied into every saved checkpoint as remote code. It does not train itself (`depmask.train`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_tiny_mdlm import TinyMDLMConfig


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding (rotate-half convention). x [b, h, l, e], positions [b, l]."""
    e = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, e, 2, device=x.device, dtype=torch.float32) / e))
    ang = positions.float()[:, None, :, None] * inv  # [b, 1, l, e/2]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: TinyMDLMConfig):
        super().__init__()
        self.h = cfg.num_attention_heads
        self.e = cfg.hidden_size // cfg.num_attention_heads
        self.theta = cfg.rope_theta
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.o_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x, positions, mask, output_attentions: bool = False):
        b, l, d = x.shape

        def split(t):  # [b, l, d] -> [b, h, l, e]
            return t.view(b, l, self.h, self.e).transpose(1, 2)

        q = rope(split(self.q_proj(x)), positions, self.theta)
        k = rope(split(self.k_proj(x)), positions, self.theta)
        v = split(self.v_proj(x))
        probs = None
        if output_attentions:  # explicit softmax: the eager reference
            scores = (q.float() @ k.float().transpose(-1, -2)) / self.e**0.5  # [b, h, l, l]
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(-1)
            out = (probs @ v.float()).to(v.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        out = out.transpose(1, 2).reshape(b, l, d)
        return self.o_proj(out), probs


class Block(nn.Module):
    def __init__(self, cfg: TinyMDLMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.ff_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x, positions, mask, output_attentions: bool = False):
        a, probs = self.attn(self.attn_norm(x), positions, mask, output_attentions)
        x = x + a
        y = self.ff_norm(x)
        x = x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))
        return x, probs


class TinyMDLMPreTrainedModel(PreTrainedModel):
    config_class = TinyMDLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)


class TinyMDLMModel(TinyMDLMPreTrainedModel):
    """The transformer trunk: token ids -> final (normed) hidden states."""

    def __init__(self, config: TinyMDLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, output_attentions=False):
        b, l = input_ids.shape
        if l > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length ({l}) exceeds `max_position_embeddings` "
                f"({self.config.max_position_embeddings})"
            )
        if attention_mask is None:
            positions = torch.arange(l, device=input_ids.device).expand(b, l)  # [b, l]
            mask = None
        else:
            am = attention_mask.bool()
            positions = (am.long().cumsum(1) - 1).clamp_min(0)  # count from the first real token
            mask = am[:, None, None, :]  # [b, 1, 1, l] keys that may be attended
        x = self.embed_tokens(input_ids)  # [b, l, d]
        hidden, attns = [], []
        for layer in self.layers:
            if output_hidden_states:
                hidden.append(x)
            x, probs = layer(x, positions, mask, output_attentions)
            if output_attentions:
                attns.append(probs)
        x = self.norm(x)
        if output_hidden_states:
            hidden.append(x)
        return x, (tuple(hidden) if output_hidden_states else None), (tuple(attns) if output_attentions else None)


class TinyMDLMForMaskedLM(TinyMDLMPreTrainedModel):
    """Trunk + untied LM head; row i predicts token i (no shift), as in LLaDA."""

    def __init__(self, config: TinyMDLMConfig):
        super().__init__(config)
        self.model = TinyMDLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,  # [b, l]
        attention_mask: torch.Tensor | None = None,  # [b, l] 1 = real token
        labels: torch.Tensor | None = None,  # [b, l], -100 = ignored
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> MaskedLMOutput:
        x, hidden, attns = self.model(input_ids, attention_mask, output_hidden_states, output_attentions)
        logits = self.lm_head(x)  # [b, l, v]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden, attentions=attns)
