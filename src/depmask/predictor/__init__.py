"""The learned dependency scorer: a DEMASK-style head over a frozen MDLM's final hidden states
(plain torch `nn.Module`), its input features, and its checkpoint format.

It predicts the empirical pairwise conditional influence between the masked positions of one
decoding step. It does not train itself (`train/`) nor decide what to commit (`decoding/`).
"""

from depmask.predictor.features import pair_mask
from depmask.predictor.head import DependencyHead
from depmask.predictor.io import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME

__all__ = ["CONFIG_NAME", "FORMAT_VERSION", "WEIGHTS_NAME", "DependencyHead", "pair_mask"]
