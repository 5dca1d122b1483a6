"""The harvest that the head-training tests train on: one per test module."""

import pytest

from depmask.data_gen import HarvestConfig
from depmask.train.harvest import run_harvest
from tests.conftest import EMBEDDED


@pytest.fixture(scope="module")
def harvest(tmp_path_factory):
    out = tmp_path_factory.mktemp("harvest") / "h"
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(out), tasks=["sudoku4", "permutation"],
                        examples_per_task=12, states_per_example=3, batch_size=12)
    run_harvest(cfg, {"accelerator": "cpu"})
    return out
