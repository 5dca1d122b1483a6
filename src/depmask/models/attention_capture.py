"""Head- and layer-averaged attention `[b, l, l]` from any model that attends through torch's
scaled-dot-product attention, without `output_attentions`.

Shapes: `b` batch, `h` query heads, `g` key/value heads, `q` queries, `k` keys, `e` head dim.

How: during one forward, `torch.nn.functional.scaled_dot_product_attention` is wrapped. Forward
hooks on the chosen transformer layers mark when one of them is running; inside those layers the
wrapper computes the attention probabilities explicitly, a chunk of heads at a time, adds them
to a single float32 `[b, q, k]` sum, and returns the original SDPA kernel's own output: capturing
never changes what the model computes (an output rebuilt from the float32 probabilities differed
from a bf16 kernel's by enough to move a decode, and to put a noise floor of up to 0.02 TV under a
bf16 harvest, whose probe forwards run uncaptured). Every other layer calls the original SDPA
kernel untouched. Extra memory is the `[b, q, k]` sum plus one chunk's scores (`CHUNK_BYTES`:
1 MiB on a CPU, 256 MiB elsewhere, or one head's `[b, q, k]` where that is larger), never
`layers × heads × [b, q, k]`.

Remote-code MDLMs (LLaDA, Dream, depmask's tiny MDLM) call `F.scaled_dot_product_attention`
directly, so the wrapper sees them as they are. Models native to transformers pick their attention
function from `ALL_ATTENTION_FUNCTIONS`; during a capture such a model is routed through
transformers' own SDPA function (registered here as `depmask_sdpa`), so this works whichever
implementation (eager, sdpa, flash) it was loaded with. If a captured layer never reached SDPA
(a fused kernel called another way), the capture raises instead of returning a partial map.
The wrapper is process-global while a capture runs: do not run two captures in parallel threads.
This module does not align rows for shifted models; `HFDenoiser` does.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

CAPTURE_ATTN_IMPLEMENTATION = "depmask_sdpa"


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layer stack: a `ModuleList` whose children share one class, of the config's
    layer count (`num_hidden_layers` / `n_layers`) when the model has one — a mixture-of-experts
    block holds a longer list of identical experts — else the longest; the outermost on a tie."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0
              and len({type(c) for c in m}) == 1]
    if not stacks:
        raise ValueError(
            f"could not find the layer stack of {type(model).__name__}: no nn.ModuleList of "
            "identical blocks; pass `capture_layers` as module paths instead"
        )
    config = getattr(model, "config", None)
    depth = next((v for k in ("num_hidden_layers", "n_layers") if isinstance(v := getattr(config, k, None), int)), None)
    of_depth = [m for m in stacks if len(m) == depth]
    return of_depth[0] if of_depth else max(stacks, key=len)  # max keeps the first (outermost) of equals


def default_capture_layers(num_layers: int) -> list[int]:
    """The last quarter of the layers (at least one)."""
    n = max(1, num_layers // 4)
    return list(range(num_layers - n, num_layers))


# the float32 scores of the heads computed together, at most (one head at least): on a GPU 256 MiB
# (all 32 heads of LLaDA-8B's shapes at batch 8, canvas 512); on a CPU 1 MiB, which stays in cache
# (2-core CPU, bf16, batch 2, canvas 512: all 32 heads at once took 1.8 times as long as one at a time)
CHUNK_BYTES = {"cpu": 1 << 20, "other": 1 << 28}


def explicit_attention(
    query: torch.Tensor,  # [b, h, q, e]
    key: torch.Tensor,  # [b, g, k, e]
    value: torch.Tensor,  # [b, g, k, e]
    attn_mask: torch.Tensor | None = None,  # bool (True = attend) or additive, broadcast to [b, h, q, k]
    is_causal: bool = False,
    scale: float | None = None,
    need_output: bool = True,
    chunk_bytes: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """SDPA computed explicitly, a chunk of heads at a time: as many as keep the chunk's float32
    scores `[b, n, q, k]` within `chunk_bytes` (default: `CHUNK_BYTES` of the device), at least
    one. Returns the output [b, h, q, e] (query dtype; None without `need_output`) and the sum over
    heads of the attention probabilities [b, q, k] (float32).

    Chunks rather than single heads: each head costs about eight small kernels. Head by head, the
    capture of LLaDA-8B shapes on an H200 took 21 ms (8 layers × 32 heads, about 2,000 kernels;
    15 % of the forward), far more than its arithmetic; chunked, one chunk of 32 heads (not yet
    timed on a GPU). `attn_mask` broadcasts as SDPA's does (right-aligned to [b, h, q, k]: a 3-D
    mask's first dimension runs over heads)."""
    b, h, q, e = query.shape
    g, k = key.shape[1], key.shape[2]
    if h % g:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({g})")
    scale = e**-0.5 if scale is None else scale
    budget = chunk_bytes or CHUNK_BYTES["cpu" if query.device.type == "cpu" else "other"]
    chunk = max(1, min(h, budget // max(1, b * q * k * 4)))
    out = torch.empty(b, h, q, value.shape[-1], dtype=query.dtype, device=query.device) if need_output else None
    prob_sum = torch.zeros(b, q, k, dtype=torch.float32, device=query.device)  # [b, q, k]
    mask = None if attn_mask is None else attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
    if is_causal:  # top-left aligned, as torch does
        causal = torch.ones(q, k, dtype=torch.bool, device=query.device).tril()
        mask = causal if mask is None else mask & causal if mask.dtype == torch.bool \
            else mask.float().masked_fill(~causal, float("-inf"))
    for first in range(0, h, chunk):
        heads = slice(first, min(h, first + chunk))
        kv = torch.arange(heads.start, heads.stop, device=query.device) // (h // g)  # each query head's kv head
        scores = query[:, heads].float() @ key.index_select(1, kv).float().transpose(-1, -2)  # [b, n, q, k]
        scores *= scale
        if mask is not None:
            m = mask[:, heads] if mask.dim() == 4 and mask.shape[1] > 1 else mask
            if m.dtype == torch.bool:
                scores.masked_fill_(~m, float("-inf"))
            else:
                scores += m.float()
        # a query row with no key to attend (a padding row under a pairwise mask): zeros, as torch's
        # SDPA gives, not softmax's NaN (Dream's unshift copies the row before the first token onto it)
        unattended = torch.isneginf(scores).all(-1, keepdim=True)  # [b, n, q, 1]
        probs = scores.softmax(dim=-1)
        del scores
        probs.masked_fill_(unattended, 0.0)
        if out is not None:
            out[:, heads] = (probs @ value.index_select(1, kv).float()).to(query.dtype)
        prob_sum += probs[:, 0] if probs.shape[1] == 1 else probs.sum(1)
        del probs
    return out, prob_sum


class AttentionCapture:
    """Captures head- and layer-averaged attention over `layers` of `model` during a forward.

    Usage: `with capture.capturing(): model(...)`, then `capture.result()` → `[b, q, k]`.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int] | None = None):
        self.model = model
        self.stack = find_layers(model)
        n = len(self.stack)
        path = next((name for name, m in model.named_modules() if m is self.stack), "")
        self.stack_name = f"`{path}` ({n} × {type(self.stack[0]).__name__})"
        if layers is not None and (isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence)
                                   or any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in layers)):
            raise ValueError(f"`capture_layers` ({layers!r}) must be a list of layer indices (ints), e.g. [-4, -3, -2, -1]")
        self.layers = sorted(set(default_capture_layers(n) if layers is None else (int(i) for i in layers)))
        bad = [i for i in self.layers if not -n <= i < n]
        if bad or not self.layers:
            raise ValueError(f"`capture_layers` ({list(layers or [])}) must be non-empty indices into the {n} layers "
                             f"of the layer stack found, {self.stack_name}")
        self.layers = sorted({i % n for i in self.layers})
        self.hf_native = type(model).__module__.startswith("transformers.")
        self._active = 0
        self._sum: torch.Tensor | None = None
        self._calls = 0
        self._heads = 0

    # -- the wrapper -----------------------------------------------------------------------
    def _sdpa(self, original):
        def wrapped(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False, **kw):
            if not self._active:
                return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, **kw)
            if dropout_p:
                raise RuntimeError("attention capture needs dropout off (call model.eval())")
            if key.shape[-3] != query.shape[-3] and not enable_gqa:
                raise RuntimeError("key/value heads differ from query heads without enable_gqa")
            _, prob_sum = explicit_attention(query, key, value, attn_mask, is_causal, scale, need_output=False)
            self._sum = prob_sum if self._sum is None else self._sum + prob_sum
            self._calls += 1
            self._heads = query.shape[1]
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa, **kw)

        return wrapped

    @contextlib.contextmanager
    def capturing(self) -> Iterator[AttentionCapture]:
        self._sum, self._calls = None, 0
        handles = []
        for i in self.layers:
            layer = self.stack[i]
            handles.append(layer.register_forward_pre_hook(self._enter))
            handles.append(layer.register_forward_hook(self._leave))
        original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = self._sdpa(original)
        config = getattr(self.model, "config", None)
        previous = getattr(config, "_attn_implementation", None) if self.hf_native else None
        try:
            if self.hf_native and config is not None:
                _register_hf_sdpa()
                config._attn_implementation = CAPTURE_ATTN_IMPLEMENTATION
            yield self
        finally:
            F.scaled_dot_product_attention = original
            for hd in handles:
                hd.remove()
            self._active = 0
            if self.hf_native and config is not None:
                config._attn_implementation = previous

    def _enter(self, module, args):
        self._active += 1

    def _leave(self, module, args, output):
        self._active -= 1

    def result(self) -> torch.Tensor:
        """[b, q, k] float32: the mean over captured layers and heads."""
        if self._calls != len(self.layers) or self._sum is None:
            raise RuntimeError(
                f"attention capture saw {self._calls} attention calls in the {len(self.layers)} "
                f"captured layers {self.layers} of the layer stack found, {self.stack_name}; either that is not "
                "the stack of attention layers, or the model does not route attention through "
                "torch.nn.functional.scaled_dot_product_attention once per layer"
            )
        return self._sum / (self._calls * self._heads)


_REGISTERED = False


def _register_hf_sdpa() -> None:
    """Register transformers' SDPA attention and mask functions under `depmask_sdpa` (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CAPTURE_ATTN_IMPLEMENTATION, sdpa_attention_forward)
    AttentionMaskInterface.register(CAPTURE_ATTN_IMPLEMENTATION, sdpa_mask)
    _REGISTERED = True
