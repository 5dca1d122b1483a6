"""Dependency-head checkpoints on disk: `config.json` + `model.safetensors` in one directory.

What it does: writes a checkpoint atomically (temporary files, then `os.replace`), reads it back
with errors that name the file and what is wrong, and checks a head against a denoiser (base-model
fingerprint and hidden size) so that a head is never silently used with another model.

What it does not do: build the module (`DependencyHead.from_pretrained` does, from the config read
here) or know anything about training; the training manifest is stored as an opaque JSON object.

`config.json` holds the architecture arguments of `DependencyHead.__init__` (flat, including
`hidden_size` and `base_fingerprint`), plus `training_manifest`, `format_version` and
`depmask_version`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

# architecture argument -> accepted JSON types (bool is checked before int: bool is an int)
ARCHITECTURE_KEYS: dict[str, tuple[type, ...]] = {
    "hidden_size": (int,),
    "dim": (int,),
    "layers": (int,),
    "heads": (int,),
    "max_distance": (int,),
    "use_confidence": (bool,),
    "dropout": (float, int),
    "base_fingerprint": (str, type(None)),
}
# architecture arguments added later -> (accepted JSON types, value of checkpoints written before)
OPTIONAL_ARCHITECTURE_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "pair_mlp": ((bool,), True),
    "pair_product": ((bool,), True),
    "pair_activation": ((str,), "gelu"),
    "use_attention": ((bool,), False),
    "set_context": ((bool,), False),
    "pair_refine": ((bool,), False),
}


def depmask_version() -> str:
    try:
        return metadata.version("depmask")
    except metadata.PackageNotFoundError:
        return "unknown"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_checkpoint(
    directory: str | Path,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    training_manifest: dict | None = None,
) -> Path:
    """Write `model.safetensors`, then `config.json`, into `directory` (created if missing), each
    atomically; `config.json` is removed first, so its presence means the pair is complete."""
    if training_manifest is not None and not isinstance(training_manifest, dict):
        raise TypeError(f"`training_manifest` must be a dict or None, got {type(training_manifest).__name__}")
    payload = {
        **config,
        "training_manifest": training_manifest,
        "format_version": FORMAT_VERSION,
        "depmask_version": depmask_version(),
    }
    try:
        text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`training_manifest` must be JSON-serialisable (finite numbers, str keys): {err}") from err
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"`directory` ({directory}) exists and is not a directory")
    check_export_dir(directory, "directory")  # a model's directory (its config and weights) is not replaced
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    # one metadata key: safetensors writes the metadata map in a per-process random order, so two
    # keys gave the same weights other file bytes, and `weights_digest` (eval provenance,
    # head_tradeoff) called a re-export of identical weights "other weights" (the format version
    # is in config.json)
    meta = {"format": "pt"}
    # the old config goes first and the new one comes last: a write killed between the two files
    # leaves weights without a config (refused on load, and the quickstart's sign of an unfinished
    # export), never new weights beside the old config's architecture and manifest
    (directory / CONFIG_NAME).unlink(missing_ok=True)
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=meta))
    _atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text + "\n"))
    return directory


def _validate_config(config: Any, path: Path) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if version is None:
        kind = f" (a {config['model_type']!r} model's config?)" if "model_type" in config else ""
        raise ValueError(f"{path}: not a dependency-head directory{kind}: its config has no `format_version`; "
                         "give a directory written by `DependencyHead.save_pretrained` or `depmask train fit`")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: `format_version` is {version!r}, this depmask reads {FORMAT_VERSION}")
    missing = [k for k in ARCHITECTURE_KEYS if k not in config]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; expected all of {list(ARCHITECTURE_KEYS)}")
    for key, (_, default) in OPTIONAL_ARCHITECTURE_KEYS.items():
        config.setdefault(key, default)
    checked = {**ARCHITECTURE_KEYS, **{k: types for k, (types, _) in OPTIONAL_ARCHITECTURE_KEYS.items()}}
    for key, types in checked.items():
        value = config[key]
        wrong = not isinstance(value, types) or (bool not in types and isinstance(value, bool))
        if wrong or (isinstance(value, float) and not math.isfinite(value)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{path}: `{key}` is {value!r}, expected {names}")
    manifest = config.get("training_manifest")
    if manifest is not None and not isinstance(manifest, dict):
        raise ValueError(f"{path}: `training_manifest` is {type(manifest).__name__}, expected an object or null")
    return config


def read_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and validate a checkpoint: returns `(config, state_dict)`.

    Raises FileNotFoundError (missing directory or file) or ValueError (unreadable or invalid
    config, unreadable weights), each naming the path.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"head checkpoint directory {directory} does not exist (or is not a directory)")
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"head checkpoint file {path} is missing; expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from err
    config = _validate_config(config, config_path)
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"`map_location` ({map_location!r}) is not a device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`map_location` ({map_location!r}): this machine has no CUDA device")
    try:
        state_dict = load_file(weights_path, device=str(device))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights_path}: cannot read safetensors weights ({err})") from err
    return config, state_dict


def check_compatible(base_fingerprint: str | None, hidden_size: int, denoiser: Any) -> None:
    """Raise ValueError if `denoiser` (anything with `.fingerprint` and `.hidden_size`) is not the
    model the head was trained on (the same config and weights hashes: a copy of the model in
    another directory is that model). A head without a recorded fingerprint is checked on hidden
    size only, with a warning."""
    from depmask.models.fingerprint import same_model  # here: `predictor` itself imports torch only

    missing = [a for a in ("fingerprint", "hidden_size") if not hasattr(denoiser, a)]
    if missing:
        raise TypeError(f"`denoiser` ({type(denoiser).__name__}) lacks attribute(s) {missing}")
    problems = []
    if int(denoiser.hidden_size) != hidden_size:
        problems.append(f"hidden size: head expects {hidden_size}, denoiser has {denoiser.hidden_size}")
    if base_fingerprint is not None and not same_model(denoiser.fingerprint, base_fingerprint):
        problems.append(
            f"fingerprint: head was trained on {base_fingerprint!r}, denoiser is {denoiser.fingerprint!r}"
        )
    if problems:
        raise ValueError("dependency head does not match the denoiser — " + "; ".join(problems))
    if base_fingerprint is None:  # built in Python and saved without one: any model of this width passes
        warnings.warn(f"this dependency head records no base model (`base_fingerprint` is None), so it was checked "
                      f"against {denoiser.fingerprint!r} on hidden size only; give `base_fingerprint` when building "
                      "a head (`depmask train fit` records it)", stacklevel=3)


def check_capture_layers(use_attention: bool, manifest: dict | None, denoiser: Any) -> None:
    """Raise ValueError if a head that reads attention was trained on attention captured over other
    layers than `denoiser` captures (the harvest's `capture_layers`, recorded in the training
    manifest; None there: the default, the last quarter). The fingerprint does not cover them, and
    the captured maps differ by up to 0.4 between layer sets. Heads without the record pass."""
    if not use_attention or not manifest or "capture_layers" not in manifest or not hasattr(denoiser, "capture"):
        return
    from depmask.models import default_capture_layers

    capture = denoiser.capture
    n = len(capture.stack)
    trained = sorted({int(i) % n for i in (manifest["capture_layers"] or default_capture_layers(n))})
    if trained != list(capture.layers):
        raise ValueError(f"dependency head does not match the denoiser — it reads attention averaged over layers "
                         f"{trained} (its harvest's `capture_layers`), the denoiser captures layers {capture.layers}; "
                         f"load the model with `capture_layers={trained}`")


def check_export_dir(directory: str | Path, name: str = "export_dir") -> None:
    """Refuse (ValueError) to export a head into a directory that holds something else: a model
    (its `config.json` has a `model_type`), or anything but a head's config. A head's directory, an
    empty one or a new one pass. Training checks it before it starts, and every save checks it
    (`write_checkpoint`); `name` is the argument named in the error."""
    from depmask.paths import existing_config

    directory, found = existing_config(name, directory)  # not a file, nor below one
    if found is not None and ("model_type" in found or "format_version" not in found):
        kind = f"a model ({found['model_type']!r})" if "model_type" in found else "a config.json that is not a head's"
        raise ValueError(f"`{name}` ({str(directory)!r}) holds {kind}; a head export would replace its "
                         "config.json and weights: give the head a directory of its own")


def capture_layers_problem(use_attention: bool, manifest: dict | None, harvested: list[int] | None) -> str | None:
    """Why a head that reads attention may not be scored on (or teach from) a harvest whose
    attention was captured over `harvested` layers (its `capture_layers`, None: the default), or
    None. Without the model the default cannot be resolved, so only two explicit, different layer
    sets are a problem (decoding checks against the loaded model: `check_capture_layers`)."""
    if not use_attention or not manifest or manifest.get("capture_layers") is None or harvested is None:
        return None
    trained = sorted({int(i) for i in manifest["capture_layers"]})
    if trained != sorted({int(i) for i in harvested}):
        return f"the head reads attention over layers {trained}, the harvest captured layers {sorted(harvested)}"
    return None
