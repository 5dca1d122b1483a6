"""Dependency scorers, one file each, and the registry the guided policy builds them from."""

from depmask.decoding.scorers.attention import AttentionScorer
from depmask.decoding.scorers.base import Scorer
from depmask.decoding.scorers.head import HeadScorer
from depmask.decoding.scorers.none import NoneScorer
from depmask.decoding.scorers.oracle import OracleScorer

SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (AttentionScorer, HeadScorer, OracleScorer, NoneScorer)}


def build_scorer(name: str, *, head=None, chunk_size: int = 64, memory_budget_mb: int = 8192) -> Scorer:
    """A scorer by name; `head` goes to the head scorer, `chunk_size` and `memory_budget_mb` to
    the oracle."""
    if name == "head":
        return HeadScorer(head)
    if name == "oracle":
        return OracleScorer(chunk_size, memory_budget_mb)
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; expected one of {sorted(SCORERS)}")
    return SCORERS[name]()


__all__ = ["SCORERS", "AttentionScorer", "HeadScorer", "NoneScorer", "OracleScorer", "Scorer", "build_scorer"]
