"""depmask: dependency-aware parallel decoding of masked diffusion language models."""

from depmask import decoding, models

__version__ = "0.1.0"

__all__ = ["__version__", "decoding", "models"]
