"""The embedded tiny MDLM: configuration, model, tokenizer, and registration with the Auto classes.

After `import depmask`, `AutoConfig`, `AutoModel` and `AutoModelForMaskedLM` know `tiny_mdlm`, so
`HFDenoiser.from_pretrained(dir)` loads a saved checkpoint like any other model. `save_tiny_mdlm`
also writes the modeling code and an `auto_map` into the checkpoint, the way LLaDA ships, so it
loads with plain transformers and `trust_remote_code=True`. Training lives in `depmask.train`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from depmask.models.tiny_mdlm.configuration_tiny_mdlm import TinyMDLMConfig
from depmask.models.tiny_mdlm.modeling_tiny_mdlm import TinyMDLMForMaskedLM, TinyMDLMModel

AutoConfig.register(TinyMDLMConfig.model_type, TinyMDLMConfig, exist_ok=True)
AutoModel.register(TinyMDLMConfig, TinyMDLMForMaskedLM, exist_ok=True)
AutoModelForMaskedLM.register(TinyMDLMConfig, TinyMDLMForMaskedLM, exist_ok=True)

REMOTE_CODE_FILES = ("configuration_tiny_mdlm.py", "modeling_tiny_mdlm.py")
AUTO_MAP = {
    "AutoConfig": "configuration_tiny_mdlm.TinyMDLMConfig",
    "AutoModel": "modeling_tiny_mdlm.TinyMDLMForMaskedLM",
    "AutoModelForMaskedLM": "modeling_tiny_mdlm.TinyMDLMForMaskedLM",
}


def save_tiny_mdlm(model: TinyMDLMForMaskedLM, directory: str | Path, tokenizer=None) -> Path:
    """`save_pretrained` plus the modeling code and `auto_map`, as a remote-code checkpoint."""
    directory = Path(directory)
    model.config.auto_map = dict(AUTO_MAP)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    here = Path(__file__).parent
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(here / name, directory / name)
    return directory


__all__ = [
    "AUTO_MAP",
    "REMOTE_CODE_FILES",
    "TinyMDLMConfig",
    "TinyMDLMForMaskedLM",
    "TinyMDLMModel",
    "save_tiny_mdlm",
]
