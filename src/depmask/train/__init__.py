"""Training (the only place Lightning is used): the tiny MDLM's masked-diffusion objective and its
data, wired into LightningCLI (`depmask mdlm fit`)."""

from depmask.train.mdlm_data import TaskMixtureDataModule, collate, encode_example
from depmask.train.mdlm_module import MDLMModule

__all__ = ["MDLMModule", "TaskMixtureDataModule", "collate", "encode_example"]
