import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "models" / "tiny-tasks"


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
