"""The decoding loop, its step state, its metrics and the parallel-unmasking policies."""

from depmask.decoding.loop import build_canvas, check_lengths, generate
from depmask.decoding.policies import POLICIES, Policy, build_policy
from depmask.decoding.result import DecodeResult
from depmask.decoding.state import StepState

__all__ = [
    "POLICIES",
    "DecodeResult",
    "Policy",
    "StepState",
    "build_canvas",
    "build_policy",
    "check_lengths",
    "generate",
]
