"""Head-training metric and data-cap boundaries against hand-derived values."""

import torch

from depmask.train.head_data import _capped
from depmask.train.head_module import HeadModule


def test_a_pair_at_the_positive_threshold_is_a_positive_in_the_val_metrics():
    """Pairs with TV ≥ `positive_threshold` are positives (AUROC / AP). One state, three positions;
    symmetric TV and attention: pair {0,1} has TV 0.25 (exactly the threshold) and attention 0.9,
    {0,2} TV 0.5 and 0.8, {1,2} TV 0 and 0.1. With {0,1} a positive both positives outscore the
    negative: the attention's AUROC is 1. Counted as a negative (`>`), it outscores the one positive
    and the AUROC falls to 0.5."""
    mod = HeadModule(hidden_size=8, dim=16, layers=0, heads=2, export_dir=None, positive_threshold=0.25)
    tv = torch.tensor([[[0.0, 0.25, 0.5], [0.25, 0.0, 0.0], [0.5, 0.0, 0.0]]])
    att = torch.tensor([[[0.0, 0.9, 0.8], [0.9, 0.0, 0.1], [0.8, 0.1, 0.0]]])
    batch = {"tv": tv, "attention": att, "confidence": torch.tensor([[0.9, 0.8, 0.7]]),
             "valid": torch.ones(1, 3, dtype=torch.bool), "hidden": torch.zeros(1, 3, 8),
             "positions": torch.arange(3)[None], "entropy": torch.zeros(1, 3)}
    with torch.no_grad():
        mod.validation_step(batch, 0)
    metrics = mod.val_attention.compute()
    assert float(metrics["auroc_attention"]) == 1.0
    assert float(metrics["ap_attention"]) == 1.0


def test_the_training_cap_takes_an_example_that_fills_it_exactly():
    """`max_train_states` keeps whole examples until the next would *pass* the cap: three examples
    of two states each under a cap of 4 give 4 states (two examples), whatever the seeded order;
    stopping when the cap would merely be reached keeps only 2."""
    ids = ["a", "a", "b", "b", "c", "c"]
    for seed in range(5):
        kept = _capped(list(range(6)), ids, 4, seed)
        assert len(kept) == 4 and kept == sorted(kept)
        assert len({ids[i] for i in kept}) == 2
