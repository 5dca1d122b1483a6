"""Head- and layer-averaged attention `[b, l, l]` from any model that attends through torch's
scaled-dot-product attention, without `output_attentions`.

Shapes: `b` batch, `h` query heads, `g` key/value heads, `q` queries, `k` keys, `e` head dim.

How: during one forward, `torch.nn.functional.scaled_dot_product_attention` is wrapped. Forward
hooks on the chosen transformer layers mark when one of them is running; inside those layers the
wrapper computes the attention probabilities explicitly, one head at a time, adds them to a
single float32 `[b, q, k]` sum, and returns the original SDPA kernel's own output: capturing never
changes what the model computes (an output rebuilt from the float32 probabilities differed from a
bf16 kernel's by enough to move a decode, and to put a noise floor of up to 0.02 TV under a bf16
harvest, whose probe forwards run uncaptured). Every other layer calls the original SDPA kernel
untouched. Extra memory is the `[b, q, k]` sum plus one head's `[b, q, k]`
scores, never `layers × heads × [b, q, k]`.

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


def explicit_attention(
    query: torch.Tensor,  # [b, h, q, e]
    key: torch.Tensor,  # [b, g, k, e]
    value: torch.Tensor,  # [b, g, k, e]
    attn_mask: torch.Tensor | None = None,  # bool (True = attend) or additive, broadcast to [b, h, q, k]
    is_causal: bool = False,
    scale: float | None = None,
    need_output: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """SDPA computed head by head. Returns the output [b, h, q, e] (query dtype; None without
    `need_output`) and the sum over heads of the attention probabilities [b, q, k] (float32)."""
    b, h, q, e = query.shape
    g, k = key.shape[1], key.shape[2]
    if h % g:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({g})")
    scale = e**-0.5 if scale is None else scale
    out = torch.empty(b, h, q, value.shape[-1], dtype=query.dtype, device=query.device) if need_output else None
    prob_sum = torch.zeros(b, q, k, dtype=torch.float32, device=query.device)  # [b, q, k]
    causal = None
    if is_causal:
        causal = torch.ones(q, k, dtype=torch.bool, device=query.device).tril()  # top-left aligned, as torch does
    for head in range(h):
        kv = head // (h // g)
        scores = (query[:, head].float() @ key[:, kv].float().transpose(-1, -2)) * scale  # [b, q, k]
        if attn_mask is not None:
            m = attn_mask[:, head if attn_mask.shape[1] > 1 else 0] if attn_mask.dim() == 4 else attn_mask
            scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
        if causal is not None:
            scores = scores.masked_fill(~causal, float("-inf"))
        # a query row with no key to attend (a padding row under a pairwise mask): zeros, as torch's
        # SDPA gives, not softmax's NaN (Dream's unshift copies the row before the first token onto it)
        probs = scores.softmax(dim=-1).masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)
        if out is not None:
            out[:, head] = (probs @ value[:, kv].float()).to(query.dtype)
        prob_sum += probs
        del scores, probs
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
