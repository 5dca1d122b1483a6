import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "models" / "tiny-tasks"

# offline, as CI runs them: the README's `python -m pytest -q` on a machine with a wandb key or
# a Hugging Face cache behaves the same (tests never touch the network)
for _name, _value in (("WANDB_MODE", "offline"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
    os.environ.setdefault(_name, _value)


@pytest.fixture(autouse=True, scope="session")
def _aot_cache_in_a_temporary_directory(tmp_path_factory):
    """Compiled selections are cached on disk (`decoding/aot.py`); tests keep theirs in a temporary
    directory, shared by the session (and its subprocesses), never in the user's cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("DEPMASK_AOT_CACHE", str(tmp_path_factory.mktemp("aot-cache")))
    yield
    patch.undo()


def pytest_configure(config):
    """Under pytest-xdist (`-n N`) the workers share the cores: each takes its share of the torch
    threads instead of all of them, so N workers do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))
