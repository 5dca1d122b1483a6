"""Real text benchmarks read from local files: GSM8K, MATH-500, HumanEval, MBPP.

`BENCHMARKS` maps a benchmark name to its class; `get_benchmark(name, **kw)` builds one. They are
kept apart from `depmask.tasks.TASKS`, which lists the synthetic tasks the embedded model is
trained and evaluated on (its tokenizer's vocabulary comes from them). Nothing here downloads
unless asked (`allow_download=True`), and nothing heavy (`datasets`, the sandbox) is imported
until it is needed.
"""

from __future__ import annotations

from typing import Any

from depmask.tasks.base import check_task_kwargs
from depmask.tasks.benchmarks.base import (
    SPECIAL_STOPS,
    Benchmark,
    Grade,
    completion_text,
    has_chat_template,
)
from depmask.tasks.benchmarks.code import called_names, extract_code, strip_fences
from depmask.tasks.benchmarks.code_benchmark import CodeBenchmark
from depmask.tasks.benchmarks.extract import (
    extract_gsm8k,
    extract_math,
    last_boxed,
    normalize_math,
    normalize_number,
    numbers_equal,
    truncate_at,
)
from depmask.tasks.benchmarks.gsm8k import GSM8K
from depmask.tasks.benchmarks.humaneval import HumanEval
from depmask.tasks.benchmarks.math500 import Math500
from depmask.tasks.benchmarks.math_compare import math_equal
from depmask.tasks.benchmarks.mbpp import MBPP
from depmask.tasks.benchmarks.source import (
    DataNotFoundError,
    DataSpec,
    locate_records,
    read_records,
)

BENCHMARKS: dict[str, type[Benchmark]] = {
    GSM8K.name: GSM8K,
    Math500.name: Math500,
    HumanEval.name: HumanEval,
    MBPP.name: MBPP,
}


def get_benchmark(name: str, **kwargs: Any) -> Benchmark:
    """Build the benchmark registered as `name` with keyword arguments `kwargs`."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark `name` ({name!r}); known: {', '.join(sorted(BENCHMARKS))}")
    check_task_kwargs(name, BENCHMARKS[name], kwargs)
    return BENCHMARKS[name](**kwargs)


__all__ = [
    "BENCHMARKS",
    "GSM8K",
    "MBPP",
    "SPECIAL_STOPS",
    "Benchmark",
    "CodeBenchmark",
    "DataNotFoundError",
    "DataSpec",
    "Grade",
    "HumanEval",
    "Math500",
    "called_names",
    "completion_text",
    "extract_code",
    "extract_gsm8k",
    "extract_math",
    "get_benchmark",
    "has_chat_template",
    "last_boxed",
    "locate_records",
    "math_equal",
    "normalize_math",
    "normalize_number",
    "numbers_equal",
    "read_records",
    "strip_fences",
    "truncate_at",
]
