"""Training (the only place Lightning is used): the tiny MDLM's masked-diffusion objective and its
data (`depmask mdlm fit`), the dependency head's module and data (`depmask train fit`), and the
harvest as a Lightning `predict` (`depmask harvest`), each wired into its CLI."""

from depmask.train.harvest import HarvestModule, run_harvest
from depmask.train.head_data import HeadDataModule
from depmask.train.head_module import HeadModule
from depmask.train.mdlm_data import TaskMixtureDataModule, collate, encode_example
from depmask.train.mdlm_module import MDLMModule

__all__ = ["HarvestModule", "HeadDataModule", "HeadModule", "MDLMModule", "TaskMixtureDataModule", "collate",
           "encode_example", "run_harvest"]
