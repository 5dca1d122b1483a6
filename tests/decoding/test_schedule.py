"""The two published step schedules, against direct transcriptions of the reference formulas."""

import pytest
import torch

from depmask.decoding.schedule import dream_count, llada_num_transfer


def _llada_reference(mask_num: int, steps: int) -> list[int]:
    # LLaDA get_num_transfer_tokens: base = n // steps, the first n % steps steps get one more
    base, rem = divmod(mask_num, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


@pytest.mark.parametrize(("n", "steps"), [(32, 32), (32, 8), (7, 3), (3, 8), (0, 4), (128, 7)])
def test_llada_schedule(n, steps):
    got = llada_num_transfer(torch.tensor([n, n]), steps)
    assert got[0].tolist() == _llada_reference(n, steps) and int(got[0].sum()) == n


def test_dream_schedule_transcription():
    eps, steps, n = 1e-3, 8, 32
    ts = [1 + (eps - 1) * i / steps for i in range(steps + 1)]  # linspace(1, eps, steps + 1)
    left = n
    for i in range(steps):
        want = int(left * (1 - ts[i + 1] / ts[i])) if i < steps - 1 else left
        assert int(dream_count(torch.tensor([left]), i, steps, eps)) == want
        left -= want
    assert left == 0


def test_dream_counts_in_float32_as_dream_does():
    """Dream builds its timesteps with `torch.linspace` (float32) and multiplies a float32 count;
    in float64 the product falls on the other side of an integer for some (steps, step, n) — found
    by a sweep over steps ≤ 64 and n ≤ 256 (19 cases, e.g. 36 against Dream's 37 below)."""
    from tests.decoding.reference import dream_count as dream

    cases = [(27, 21, 223, 37), (27, 22, 186, 36), (27, 24, 224, 74)]  # (steps, step, n, Dream's count)
    for steps, step, n, want in cases:
        assert dream(n, step, steps) == want
        assert int(dream_count(torch.tensor([n]), step, steps)) == want
    for steps in (27, 64):
        got = [[int(c) for c in dream_count(torch.arange(1, 257), step, steps)] for step in range(steps - 1)]
        assert got == [[dream(n, step, steps) for n in range(1, 257)] for step in range(steps - 1)]
