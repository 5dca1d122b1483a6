import pytest

from tests.decoding.mock import MockDenoiser


@pytest.fixture
def mock_denoiser():
    return MockDenoiser()


@pytest.fixture
def prompts():
    """Three prompts of different lengths (ids below the mock's mask id)."""
    return [[1, 2, 3], [4, 5], [6, 7, 8, 9, 0]]
