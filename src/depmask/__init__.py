"""depmask: dependency-aware parallel decoding of masked diffusion language models.

The names most scripts need are here: `HFDenoiser` (load a model), `build_policy` and `generate`
(decode with any policy), `DependencyHead` (a trained head), `get_task` (the synthetic tasks).
Everything else lives in the subpackages (`decoding`, `models`, `predictor`, `tasks`, `eval`,
`data_gen`; Lightning only in `train`).
"""

from depmask import decoding, models
from depmask.decoding import build_policy, generate
from depmask.models import HFDenoiser
from depmask.predictor import DependencyHead
from depmask.tasks import get_task

__version__ = "0.1.0"

__all__ = ["DependencyHead", "HFDenoiser", "__version__", "build_policy", "decoding", "generate", "get_task",
           "models"]
