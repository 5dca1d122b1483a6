"""The decoding loop, its step state, its metrics, the parallel-unmasking policies, the dependency
scorers and the shared greedy selector."""

from depmask.decoding.compile import compile_mode, compile_mode_for, compiled_select
from depmask.decoding.loop import build_canvas, check_lengths, generate
from depmask.decoding.policies import POLICIES, Policy, build_policy, check_policy
from depmask.decoding.result import DecodeResult
from depmask.decoding.sampling import batch_seed
from depmask.decoding.scorers import SCORERS, Scorer, build_scorer
from depmask.decoding.selector import greedy_select
from depmask.decoding.state import StepState
from depmask.decoding.trajectory import trajectory_lines

__all__ = [
    "POLICIES",
    "SCORERS",
    "DecodeResult",
    "Policy",
    "Scorer",
    "StepState",
    "batch_seed",
    "build_canvas",
    "build_policy",
    "build_scorer",
    "check_lengths",
    "check_policy",
    "compile_mode",
    "compile_mode_for",
    "compiled_select",
    "generate",
    "greedy_select",
    "trajectory_lines",
]
