"""`HFDenoiser`: a local Hugging Face checkpoint behind the `Denoiser` contract.

Shapes: `b` batch, `l` sequence, `v` vocabulary, `d` hidden size.

Loads, from a local directory only (nothing is downloaded):
- bidirectional masked LMs through `AutoModelForMaskedLM` (BERT / ModernBERT style, and the
  embedded tiny MDLM once `depmask` is imported);
- remote-code MDLMs through `AutoModel(..., trust_remote_code=True)` (LLaDA, Dream).
Dream-style models predict token i from position i − 1; with `logits_shift` (auto-detected from
`model_type`) the shift is undone here, once, for logits, hidden states and attention rows alike.
The mask id comes from the argument, the tokenizer, the config or the tokenizer's vocabulary, in
that order. Logits come back float32. It does not decode (`depmask.decoding` does).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from depmask.models.attention_capture import AttentionCapture
from depmask.models.denoiser import DenoiserOutput
from depmask.models.fingerprint import fingerprint as model_fingerprint
from depmask.models.fingerprint import stored_tensors
from depmask.models.remote_code import load_remote, load_remote_model

MASK_STRINGS = ("<|mdm_mask|>", "<|mask|>", "[MASK]", "<mask>")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")
EOT_STRINGS = ("<|eot_id|>", "<|endoftext|>", "<|im_end|>", "[EOS]")


class HFDenoiser:
    """A frozen HF model as a `Denoiser`: one call = one forward = one NFE."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer=None,
        mask_id: int | None = None,
        eos_ids: Sequence[int] | None = None,
        logits_shift: bool | None = None,
        capture_layers: Sequence[int] | None = None,
        name: str | None = None,
        path: str | Path | None = None,
        fingerprint: str | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        config = getattr(model, "config", None)
        self.mask_id = resolve_mask_id(mask_id, tokenizer, config)
        self.eos_ids = tuple(eos_ids) if eos_ids is not None else resolve_eos_ids(tokenizer, config)
        self.vocab_size = int(_config_value(config, "vocab_size", "embedding_size") or model.get_output_embeddings().out_features)
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"`mask_id` ({self.mask_id}) must be a token id in [0, {self.vocab_size}) (the model's vocabulary)")
        self.hidden_size = int(_config_value(config, "hidden_size", "d_model", "n_embd", "dim"))
        self.logits_shift = detect_logits_shift(config) if logits_shift is None else bool(logits_shift)
        self._capture_layers = capture_layers
        # explicit layers are checked against the model now, not at the first attention forward
        self._capture = None if capture_layers is None else AttentionCapture(model, capture_layers)
        self.fingerprint = fingerprint or model_fingerprint(model, name=name, path=path)
        # a model whose forward takes `position_ids` numbers a left-padded row from its padding unless
        # told otherwise (BERT's learned absolute positions); Dream passes them the same way. Not for
        # models that derive them from the tokens, skipping padding (RoBERTa's family, from 2)
        self._position_ids = ("position_ids" in inspect.signature(model.forward).parameters
                              and not _counts_own_positions(model))
        # …and those count from the ids equal to the config's pad id, whatever the attention mask says:
        # padding columns are given that id (`generate` fills them with EOS by default)
        own = _counts_own_positions(model) and _config_value(config, "pad_token_id") is not None
        self._pad_fill = int(_config_value(config, "pad_token_id")) if own else None
        # Dream hands `attention_mask` to SDPA as given: its `generate` passes a padded batch's mask
        # as `[b, 1, l, l]` bool (query and key both real), which a `[b, l]` mask is not
        self._pairwise_mask = is_dream(config)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        mask_id: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        logits_shift: bool | None = None,
        capture_layers: Sequence[int] | None = None,
        trust_remote_code: bool = True,
        attn_implementation: str | None = None,
    ) -> HFDenoiser:
        """Load a model (and its tokenizer, if it has one) from a local directory.

        Args:
            path: a local directory with `config.json` and weights. Hub ids are refused.
            mask_id: the mask token id, when neither tokenizer nor config names it.
            device: where to put the model (default: cpu).
            dtype: e.g. "bfloat16" (default: as saved).
            logits_shift: undo a one-position logit shift (default: auto, True for Dream).
            capture_layers: layer indices averaged by attention capture (default: last quarter).
            trust_remote_code: allow the checkpoint's own modeling code (LLaDA, Dream need it).
            attn_implementation: passed to transformers for native models (e.g. "sdpa").
        """
        from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING


        path = Path(path).expanduser()
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise FileNotFoundError(
                f"`path` ({str(path)!r}) is not a local model directory with a config.json; "
                "depmask never downloads: point it at a checkpoint on disk"
            )
        _refuse_head_directory(path)
        device = check_device(device)
        if isinstance(dtype, str):
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"`dtype` ({dtype!r}) is not a torch dtype name, e.g. 'bfloat16'")
            dtype = getattr(torch, dtype)
        config = load_remote(AutoConfig.from_pretrained, path, trust_remote_code=trust_remote_code,
                             local_files_only=True)
        auto_map = getattr(config, "auto_map", None) or {}
        kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": True}
        if dtype is not None:
            kwargs["dtype"] = dtype
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        # a class with the LM head: LLaDA2's `AutoModel` is its headless trunk, its LM under AutoModelForCausalLM
        auto_class = next((k for k in ("AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModel") if k in auto_map), None)
        remote = auto_map.get(auto_class) if auto_class else None
        if type(config) in MODEL_FOR_MASKED_LM_MAPPING:
            model = AutoModelForMaskedLM.from_pretrained(path, **kwargs)
        elif remote is not None and trust_remote_code:
            # the checkpoint's own class, adapted to transformers 5 where it was written for 4 (LLaDA, Dream)
            kwargs.pop("trust_remote_code")
            model = load_remote_model(path, config, remote, auto_class, **kwargs)
        elif remote is not None:
            raise ValueError(f"model at {str(path)!r} brings its own modeling code ({remote}); loading it needs "
                             "`trust_remote_code=True`")
        else:
            raise ValueError(
                f"model at {str(path)!r} (model_type {getattr(config, 'model_type', None)!r}) is neither a "
                "masked LM known to AutoModelForMaskedLM nor a remote-code model with an `auto_map`"
            )
        tokenizer = None  # only from real tokenizer files: transformers 5 invents an empty one otherwise
        has_tokenizer = any((path / f).is_file() for f in TOKENIZER_FILES)
        if has_tokenizer:  # files that are there but do not load are named, not taken for "no tokenizer"
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
                warnings.warn(f"the tokenizer files in {str(path)!r} could not be loaded ({type(err).__name__}: "
                              f"{err}); the model loads without a tokenizer (token ids only)", stacklevel=2)
        model.to(device)
        # hashed as stored, so that the dtype asked for does not change the model's identity
        stored = stored_tensors(path, prefix=getattr(model, "base_model_prefix", "") or "")
        return cls(model, tokenizer, mask_id=mask_id, logits_shift=logits_shift, capture_layers=capture_layers,
                   path=path, fingerprint=model_fingerprint(model, path=path, stored=stored))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def capture_layers(self) -> list[int] | None:
        """The attention capture layers given at load; None: the default, the last quarter."""
        return None if self._capture_layers is None else list(self._capture_layers)

    @property
    def capture(self) -> AttentionCapture:
        if self._capture is None:
            self._capture = AttentionCapture(self.model, self._capture_layers)
        return self._capture

    @torch.no_grad()
    def __call__(
        self,
        tokens: torch.Tensor,  # [b, l] long
        attention_mask: torch.Tensor | None = None,  # [b, l] 1 = real token
        need_hidden: bool = False,
        need_attention: bool = False,
    ) -> DenoiserOutput:
        kwargs = {"input_ids": tokens}
        if attention_mask is not None and self._pad_fill is not None:
            kwargs["input_ids"] = tokens.masked_fill(attention_mask == 0, self._pad_fill)
        if attention_mask is not None:
            if self._pairwise_mask:
                am = attention_mask.bool()
                kwargs["attention_mask"] = am[:, None, None, :] & am[:, None, :, None]  # [b, 1, l, l]
            else:
                kwargs["attention_mask"] = attention_mask.long()
            if self._position_ids:  # each row counts from its first real token, as it would alone
                first = attention_mask.long().argmax(dim=-1, keepdim=True)  # [b, 1]: left padding width
                kwargs["position_ids"] = (torch.arange(tokens.shape[1], device=tokens.device) - first).clamp_min(0)
        if need_hidden:
            kwargs["output_hidden_states"] = True
        ctx = self.capture.capturing() if need_attention else contextlib.nullcontext()
        with ctx:
            out = self.model(**kwargs)
        logits = (out.logits if hasattr(out, "logits") else out[0]).float()  # [b, l, v]
        if logits.dim() != 3 or logits.shape[-1] < self.vocab_size:
            raise ValueError(f"{type(self.model).__name__} returned {tuple(logits.shape)} where logits [b, l, "
                             f"{self.vocab_size}] were expected: it is not a model with a language-model head "
                             "(a checkpoint's `auto_map` may name its trunk under AutoModel)")
        hidden = out.hidden_states[-1] if need_hidden else None  # [b, l, d]
        attention = self.capture.result() if need_attention else None  # [b, l, l]
        if self.logits_shift:
            logits = unshift_rows(logits)
            hidden = unshift_rows(hidden)
            attention = unshift_rows(attention)
        return DenoiserOutput(logits=logits, hidden=hidden, attention=attention)

    def __repr__(self) -> str:
        return f"HFDenoiser({self.fingerprint}, mask_id={self.mask_id}, shift={self.logits_shift})"


def _counts_own_positions(model: nn.Module) -> bool:
    """Whether the model numbers positions from its input ids, padding skipped (RoBERTa, XLM-R,
    CamemBERT, …: `create_position_ids_from_input_ids`, a method of their embeddings in recent
    transformers, a function of their modeling module in older ones)."""
    import sys

    name = "create_position_ids_from_input_ids"
    if hasattr(sys.modules.get(type(model).__module__), name):
        return True
    return any(hasattr(module, name) for module in model.modules())


def _refuse_head_directory(path: Path) -> None:
    """A dependency head's directory (`DependencyHead.save_pretrained`) is not a model: say so,
    instead of transformers' 'Unrecognized model'."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return  # transformers reports it
    if isinstance(config, dict) and "model_type" not in config and {"format_version", "base_fingerprint"} <= set(config):
        raise ValueError(f"`path` ({str(path)!r}) holds a dependency head, not a model: give the base model's "
                         f"directory here and the head to the policy (`--policy.head {path}`)")


def check_device(device: str | torch.device | None) -> torch.device:
    """`device` as a `torch.device` (None: cpu), refused before anything loads when it is malformed
    or this machine cannot use it (a CUDA device on a CPU-only torch build or without a GPU)."""
    try:  # None or "": not given; an index 0 is torch's accelerator 0, as 1 is
        dev = torch.device("cpu" if device is None or device == "" else device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"`device` ({device!r}) is not a torch device, e.g. 'cpu', 'cuda', 'cuda:1' ({err})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`device` ({device!r}) asks for CUDA, which this torch cannot use (no GPU, or a CPU-only "
                             f"build: torch {torch.__version__}); use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"`device` ({device!r}): this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps":  # decoding's per-step statistics and sampling are float64, which MPS lacks
        raise ValueError(f"`device` ({device!r}): decoding computes its step statistics in float64, which MPS does "
                         "not support; use 'cpu' (or 'cuda')")
    return dev


def unshift_rows(x: torch.Tensor | None) -> torch.Tensor | None:
    """Row i ← row i − 1 along dim 1 (row 0 keeps its own); undoes next-token alignment."""
    if x is None:
        return None
    return torch.cat([x[:, :1], x[:, :-1]], dim=1)


def is_dream(config) -> bool:
    """A Dream-family model: its model_type or an architecture names Dream."""
    names = [str(getattr(config, "model_type", "") or "")] + list(getattr(config, "architectures", None) or [])
    return any("dream" in n.lower() for n in names)


def detect_logits_shift(config) -> bool:
    """Dream-style models (model_type containing 'dream') predict token i at position i − 1."""
    return is_dream(config)


def resolve_mask_id(mask_id: int | None, tokenizer, config) -> int:
    if mask_id is not None:
        return int(mask_id)
    tok_id = getattr(tokenizer, "mask_token_id", None) if tokenizer is not None else None
    if tok_id is not None:
        return int(tok_id)
    cfg_id = getattr(config, "mask_token_id", None)
    if cfg_id is not None:
        return int(cfg_id)
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        for s in MASK_STRINGS:
            if s in vocab:
                return int(vocab[s])
    raise ValueError(
        "no mask token: looked at the `mask_id` argument (None), "
        f"tokenizer.mask_token_id ({'no tokenizer' if tokenizer is None else tok_id}), "
        f"config.mask_token_id ({cfg_id}) and the tokenizer vocabulary for {list(MASK_STRINGS)}; "
        "pass `mask_id=` explicitly"
    )


def resolve_eos_ids(tokenizer, config) -> tuple[int, ...]:
    ids: list[int] = []
    cfg = getattr(config, "eos_token_id", None)
    for v in ([cfg] if isinstance(cfg, int) else list(cfg or [])):
        ids.append(int(v))
    if tokenizer is not None:
        if tokenizer.eos_token_id is not None:
            ids.append(int(tokenizer.eos_token_id))
        vocab = tokenizer.get_vocab()
        ids += [int(vocab[s]) for s in EOT_STRINGS if s in vocab]
    return tuple(dict.fromkeys(ids))


def _config_value(config, *names):
    for cfg in (config, getattr(config, "get_text_config", lambda: None)()):
        for n in names:
            v = getattr(cfg, n, None)
            if v is not None:
                return v
    return None
