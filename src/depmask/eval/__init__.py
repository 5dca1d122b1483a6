"""Evaluation: task accuracy of a model under any decoding policy."""

from depmask.eval.task_accuracy import DEFAULT_TASKS, decode_accuracy, decode_task, score_task

__all__ = ["DEFAULT_TASKS", "decode_accuracy", "decode_task", "score_task"]
