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
