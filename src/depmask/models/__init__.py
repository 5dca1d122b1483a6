"""Models: the `Denoiser` contract, the Hugging Face adapter, attention capture, and the embedded
tiny MDLM (registered with the transformers Auto classes on import)."""

from depmask.models import tiny_mdlm
from depmask.models.attention_capture import AttentionCapture, default_capture_layers, find_layers
from depmask.models.denoiser import Denoiser, DenoiserOutput
from depmask.models.fingerprint import fingerprint
from depmask.models.hf_denoiser import HFDenoiser

__all__ = [
    "AttentionCapture",
    "Denoiser",
    "DenoiserOutput",
    "HFDenoiser",
    "default_capture_layers",
    "find_layers",
    "fingerprint",
    "tiny_mdlm",
]
