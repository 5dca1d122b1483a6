"""Evaluation: task accuracy of a model under any decoding policy (`score_task`), the decoding
benchmark over policy sweeps (`run_decode_eval`, `PolicySweep`) and its headline and bootstrap
(`headline_report`, `headline_intervals`), predictor-quality metrics (`score_metrics`) and the
sub-additivity check (`influence_bounds`, `SetProbe`).

The names beyond task accuracy load on first use: their modules import `datasets` (harvest
reading), which `import depmask.eval` alone does not pay for.
"""

from importlib import import_module

from depmask.eval.task_accuracy import DEFAULT_TASKS, decode_accuracy, decode_task, score_task

_LAZY = {
    "PolicySweep": "depmask.eval.runner",
    "run_decode_eval": "depmask.eval.runner",
    "headline_report": "depmask.eval.headline",
    "headline_intervals": "depmask.eval.headline_ci",
    "score_metrics": "depmask.eval.predictor_quality",
    "influence_bounds": "depmask.eval.subadditivity",
    "SetProbe": "depmask.eval.subadditivity",
}


def __getattr__(name: str):
    if name in _LAZY:  # (no lazy name is also a submodule's: importing it would bind the module)
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'depmask.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["DEFAULT_TASKS", "PolicySweep", "SetProbe", "decode_accuracy", "decode_task", "headline_intervals",
           "headline_report", "influence_bounds", "run_decode_eval", "score_metrics", "score_task"]
