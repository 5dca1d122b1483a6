"""`tensor_cache`: cached eagerly, bypassed (nothing stored) while torch exports or compiles."""

import torch

from depmask.tensor_cache import tensor_cache


@tensor_cache
def _ramp(n: int) -> torch.Tensor:
    return torch.arange(n)


class _UsesRamp(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _ramp(x.shape[1])


def test_eager_calls_are_cached():
    _ramp.cache_clear()
    assert _ramp(4) is _ramp(4) and _ramp.cache_info().hits == 1


def test_export_traces_through_without_caching_a_fake_tensor():
    """An export runs the Python on fake tensors; a plain lru_cache would keep one and return it
    to every later eager call (the bug this wrapper exists for)."""
    _ramp.cache_clear()
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(_UsesRamp(), (torch.zeros(2, 5),), dynamic_shapes=({0: batch},))
    assert _ramp.cache_info().currsize == 0
    eager = _ramp(5)
    assert type(eager) is torch.Tensor and eager.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(exported.module()(torch.ones(3, 5)), torch.ones(3, 5) + eager)


def test_compile_traces_through_without_caching():
    _ramp.cache_clear()
    compiled = torch.compile(_UsesRamp(), backend="eager")
    assert torch.equal(compiled(torch.zeros(2, 3)), torch.arange(3).expand(2, 3).float())
    assert _ramp.cache_info().currsize == 0
