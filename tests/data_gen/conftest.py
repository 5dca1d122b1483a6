import pytest

from depmask.models import HFDenoiser
from tests.conftest import EMBEDDED


@pytest.fixture(scope="session")
def embedded():
    return HFDenoiser.from_pretrained(EMBEDDED)
