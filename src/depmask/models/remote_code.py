"""Running a checkpoint's own modeling code (LLaDA, Dream) under the transformers depmask uses.

Remote code is written against the transformers of its day. Dream-7B's code builds its rotary
embedding with `ROPE_INIT_FUNCTIONS["default"]`, an entry transformers 5 removed (each native model
now computes its default RoPE itself), so under transformers 5 Dream fails to load with a bare
`KeyError: 'default'` (reported upstream as DreamLM/Dream#83; other remote-code models do the
same). `default_rope_entry()` puts the entry back while such code is built and loaded, computing
what transformers 4 computed, and only when it is missing.

Loading it is not enough. Transformers 5 builds a model on the `meta` device and, for buffers that
are not in the checkpoint (a rotary module's non-persistent `inv_freq`), allocates uninitialised
memory and leaves the refill to the model's `_init_weights`; its own base class does that for
rotary modules, but remote code that overrides `_init_weights` for its linear and embedding layers
(Dream's does) keeps whatever the allocation held: RoPE with garbage frequencies, and no error.
`restore_rope_buffers` recomputes the frequencies of every rotary module written in transformers
4's style (`rope_init_fn`, `config`, `inv_freq`) after loading.

LLaDA-8B's code has two more transformers-4 habits that transformers 5 does not accept: its model
class never calls `post_init()` (transformers 5 sets `all_tied_weights_keys` there and loading
fails with an AttributeError without it), and its `tie_weights()` takes no arguments (transformers
5 passes some). `compatible_class` gives the class a subclass that does both, changing nothing for
code written for transformers 5. Any other failure inside the checkpoint's code is re-raised by
`load_remote` naming the checkpoint, the transformers version it was written for and the
one installed, instead of a traceback that ends in someone else's file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def default_rope_parameters(config=None, device=None, seq_len=None, **rope_kwargs) -> tuple[torch.Tensor, float]:
    """Plain RoPE's inverse frequencies θ^(-2i/d) and attention scale 1, as transformers 4's
    `"default"` entry gave them: `d` from `head_dim` (or hidden_size / num_attention_heads) times
    `partial_rotary_factor`, θ from `rope_theta`; or both from `base` / `dim` keywords (the old
    calling convention without a config)."""
    del seq_len  # plain RoPE does not depend on the length
    if rope_kwargs.get("dim") is not None and rope_kwargs.get("base") is not None:
        base, dim = float(rope_kwargs["base"]), int(rope_kwargs["dim"])
    elif config is not None:
        base = getattr(config, "rope_theta", None)
        if base is None:  # transformers 5 configs keep it in rope_parameters
            base = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
        if base is None:
            raise ValueError(f"{type(config).__name__} has no `rope_theta`: cannot compute default RoPE frequencies")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        factor = getattr(config, "partial_rotary_factor", None)
        if factor is None:
            factor = (getattr(config, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
        dim = int(head_dim * factor)
        base = float(base)
    else:
        raise ValueError("default RoPE needs a model config, or `base` and `dim`")
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
    return 1.0 / (base**exponents), 1.0


@contextlib.contextmanager
def default_rope_entry():
    """`default_rope_parameters` as transformers' `"default"` RoPE while a checkpoint's own code is
    built and loaded, when the installed transformers lacks it (5.x); removed afterwards. Only
    then: transformers 5's weight init reads the global entry before a native rotary module's own
    default, so left in place it gave native partial-rotary models (Phi, StableLM, GPT-NeoX) RoPE of
    the wrong width in the rest of the process."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if "default" in ROPE_INIT_FUNCTIONS:
        yield
        return
    ROPE_INIT_FUNCTIONS["default"] = default_rope_parameters
    try:
        yield
    finally:
        if ROPE_INIT_FUNCTIONS.get("default") is default_rope_parameters:
            del ROPE_INIT_FUNCTIONS["default"]


@torch.no_grad()
def restore_rope_buffers(model: torch.nn.Module) -> int:
    """Recompute `inv_freq` (and `original_inv_freq`, `attention_scaling`) of the model's rotary
    modules written in transformers 4's style, with their own `rope_init_fn`. Returns how many."""
    restored = 0
    for module in model.modules():
        init_fn, buffer = getattr(module, "rope_init_fn", None), getattr(module, "inv_freq", None)
        if not callable(init_fn) or not isinstance(buffer, torch.Tensor) or not hasattr(module, "config"):
            continue
        inv_freq, scaling = init_fn(module.config, buffer.device, **(getattr(module, "rope_kwargs", None) or {}))
        buffer.copy_(inv_freq.to(buffer.dtype))
        if "original_inv_freq" in module._buffers:
            module.original_inv_freq.copy_(inv_freq.to(module.original_inv_freq.dtype))
        elif isinstance(getattr(module, "original_inv_freq", None), torch.Tensor):
            module.original_inv_freq = buffer  # a plain attribute: the constructor's (now meta) tensor
        if hasattr(module, "attention_scaling"):
            module.attention_scaling = scaling
        restored += 1
    return restored


def compatible_class(cls: type) -> type:
    """A subclass of a checkpoint's model class that transformers 5 can load: `post_init()` runs
    after the class's own `__init__` when that did not call it, and a `tie_weights()` without
    parameters is called without the arguments transformers 5 passes. Same name and module; the
    module's own name still means the checkpoint's class (its code may call
    `super(ClassName, self)`), and the subclass is kept beside it as `<Name>_depmask_adapted`, the
    name pickle finds it by (`ddp_spawn` pickles the model). Adapting a class again returns that."""
    import inspect
    import sys

    if vars(cls).get("_depmask_adapted", False):
        return cls
    module = sys.modules.get(cls.__module__)
    alias = f"{cls.__qualname__}_depmask_adapted"
    known = getattr(module, alias, None) if module is not None else None
    if isinstance(known, type) and known.__mro__[1] is cls:
        return known
    own_tie = cls.tie_weights
    params = inspect.signature(own_tie).parameters.values()
    takes_arguments = any(p.kind is p.VAR_KEYWORD or p.name == "missing_keys" for p in params)

    def __init__(self, *args, **kwargs):
        cls.__init__(self, *args, **kwargs)
        if "all_tied_weights_keys" not in self.__dict__:  # post_init() never ran (transformers 4 code)
            self.post_init()

    namespace = {"__init__": __init__, "__module__": cls.__module__, "__qualname__": alias,
                 "__doc__": cls.__doc__, "_depmask_adapted": True}
    if not takes_arguments:
        namespace["tie_weights"] = lambda self, *args, **kwargs: own_tie(self)
    adapted = type(cls.__name__, (cls,), namespace)
    if module is not None:
        setattr(module, alias, adapted)
    return adapted


# errors of a transformers-4 API inside transformers 5 (a missing attribute, an argument too many);
# transformers' own ValueError / ImportError (trust_remote_code, a missing pip package, a bad
# `attn_implementation`) are left as they are
_API_ERRORS = (AttributeError, TypeError, KeyError, NameError)


def load_remote(load, path: Path, *args, **kwargs):
    """`load(path, *args, **kwargs)` (a `from_pretrained`) for a checkpoint that may bring its own
    code: an error raised while that code runs, or an API error (`_API_ERRORS`) from a checkpoint
    that brings code, is re-raised naming the checkpoint and both transformers versions, with the
    original as its cause. Other errors are left as they are."""
    try:
        return load(path, *args, **kwargs)
    except Exception as err:
        if isinstance(err, OSError) or not (
                _raised_in_remote_code(err) or (isinstance(err, _API_ERRORS) and _brings_code(path))):
            raise
        raise RuntimeError(
            f"the modeling code that ships with {str(path)!r} failed under transformers "
            f"{_installed()} (its config.json was saved with transformers {_written_for(path)}): "
            f"{type(err).__name__}: {err}. Remote code is written for the transformers of its day; "
            "look for a revision of the checkpoint's code that supports this version"
        ) from err


def load_remote_model(path: Path, config, class_ref: str, auto_class: str = "AutoModel", **kwargs):
    """The checkpoint's own model class (`class_ref`, its `auto_map[auto_class]` entry), made
    loadable by transformers 5 (`compatible_class`; the `"default"` RoPE entry present while it is
    built), loaded with `config`; RoPE buffers restored. Registered for `auto_class`, so that
    `save_pretrained` writes the modeling code beside the weights, as `AutoModel` loading does."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    def load(path, **kwargs):
        with default_rope_entry():
            adapted = compatible_class(get_class_from_dynamic_module(class_ref, path, local_files_only=True))
            adapted.register_for_auto_class(auto_class)
            return adapted.from_pretrained(path, config=config, **kwargs)

    model = load_remote(load, path, **kwargs)
    restore_rope_buffers(model)
    return model


def _config_json(path: Path) -> dict:
    """The checkpoint's config.json as stored ({} when it cannot be read)."""
    import json

    try:
        data = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _brings_code(path: Path) -> bool:
    return bool(_config_json(path).get("auto_map"))


def _installed() -> str:
    import transformers

    return transformers.__version__


def _written_for(path: Path) -> str:
    return str(_config_json(path).get("transformers_version") or "an unrecorded version")


def _raised_in_remote_code(err: BaseException) -> bool:
    """Whether `err` was raised by the checkpoint's own code (transformers copies it into a
    `transformers_modules` package): the innermost frame of its traceback is there. Not any frame:
    that code calls transformers, whose own errors (a bad `attn_implementation`) are the user's."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "transformers_modules" in tb.tb_frame.f_code.co_filename
