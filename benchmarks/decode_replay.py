"""A policy's decode recorded, replayed and timed: the pieces of `selection_overhead.py`'s
whole-decode comparison (`decode_overhead`: a decode's wall time minus that of the same decode
replaying its recorded commits), also used by `head_tradeoff.py`."""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch

from depmask.decoding import Policy, compiled_select, generate


class Recorder(Policy):
    """Wraps a policy in the real loop and keeps every step state it sees, and its answers."""

    name = "recorder"

    def __init__(self, inner: Policy):
        self.inner, self.states, self.commits = inner, [], []

    @property
    def needs_hidden(self):  # type: ignore[override]
        return self.inner.needs_hidden

    @property
    def needs_attention(self):  # type: ignore[override]
        return self.inner.needs_attention

    def bind(self, denoiser):
        self.inner.bind(denoiser)

    def select(self, state):
        self.states.append(state)
        self.commits.append(self.inner.select(state))
        return self.commits[-1]


class Replay(Recorder):
    """Answers each step with the recorded commit of that step, at no selection cost: the same
    decode (same forwards, with the same captures), minus the policy's work."""

    name = "replay"

    def __init__(self, inner: Policy, commits: list[torch.Tensor]):
        super().__init__(inner)
        self.commits, self.step = commits, 0

    def bind(self, denoiser):
        self.step = 0  # `generate()` binds once per decode

    def select(self, state):
        self.step += 1
        return self.commits[self.step - 1]


class Timing(Recorder):
    """The policy as `generate()` runs it — its `bind`, its select compiled as `compile_select`
    says — with each select call timed: the selection inside real decodes, where the previous
    step's forward and statistics, not a replayed prelude, leave the caches as they are."""

    name = "timing"

    def __init__(self, inner: Policy, select, device: torch.device):
        super().__init__(inner)
        self.fn, self.seconds = select, []
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def select(self, state):
        self.sync()
        start = time.perf_counter()
        commit = self.fn(state)
        self.sync()
        self.seconds.append(time.perf_counter() - start)
        return commit


def decode_overhead(den, policy: Policy, prompts, gen_length: int, commits: list, repeats: int,
                    compile_select: str | None, seed: int = 0) -> dict:
    """Milliseconds per step of a whole `generate()` call, each over the number of steps:
    `added`, the median over rounds of the decode's wall time minus that of the same decode
    replaying its recorded commits (`Replay`) in the same round — paired, so that a slow spell of
    the machine slows both — with `added_lo` / `added_hi`, a 95 % bootstrap interval of that
    median; `step`, the replay's median time, a step as a decode runs it (forward, statistics,
    loop), its forwards back to back; `select`, the median over decodes of the select calls' time
    inside them (`Timing`). The two decodes alternate, after one warm-up of each. `added − select`
    is what the policy adds outside its select calls: its `bind` once per decode, a slower forward
    after a selection, and noise. On a GPU `added` is taken from a third, untimed decode of the
    policy: `Timing`'s synchronisations would keep the select from overlapping the forward still
    running, as it does in a real decode."""
    select = policy.select if compile_select is None else compiled_select(policy, compile_select)
    timing, replay = Timing(policy, select, den.device), Replay(policy, commits)
    per_decode: list[float] = []
    pad_id = den.tokenizer.pad_token_id

    def timed_decode():
        timing.seconds.clear()
        if compile_select is not None:  # what `generate(compile_select=...)` pays on every call: the
            timing.fn = compiled_select(policy, compile_select)  # check that the policy is unchanged
        generate(den, prompts, timing, gen_length=gen_length, pad_id=pad_id)
        per_decode.append(sum(timing.seconds))

    runs = {"policy": timed_decode,
            "replay": partial(generate, den, prompts, replay, gen_length=gen_length, pad_id=pad_id)}
    if den.device.type == "cuda":  # `Timing` synchronises around each select, which stops the select's
        # launches overlapping the forward still running: `added` comes from an untimed decode instead
        runs["plain"] = partial(generate, den, prompts, policy, gen_length=gen_length, pad_id=pad_id,
                                compile_select=compile_select or False)
    seconds = timed(runs, den.device, repeats, raw=True)
    n = len(commits)
    added = seconds.get("plain", seconds["policy"])
    diffs = torch.tensor(added, dtype=torch.float64) - torch.tensor(seconds["replay"], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    # quantile(0.5), not `median`: torch's median of an even count is the lower middle value
    draws = diffs[torch.randint(len(diffs), (1000, len(diffs)), generator=g)].quantile(0.5, dim=1)
    lo, hi = torch.quantile(draws, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"added": 1e3 * diffs.quantile(0.5).item() / n, "added_lo": 1e3 * lo / n, "added_hi": 1e3 * hi / n,
            "step": 1e3 * statistics.median(seconds["replay"]) / n,
            "select": 1e3 * statistics.median(per_decode[1:]) / n}  # [1:]: the warm-up decode


def timed(fns: dict, device: torch.device, repeats: int, raw: bool = False) -> dict:
    """Median seconds of each `fns[name]` over `repeats` rounds after one warm-up round (`raw`:
    the list of each round's seconds, in round order, instead of the median). An entry
    is a function, or `(prelude, function)`: the prelude runs untimed right before it (what the
    loop runs before a selection). The entries run interleaved within a round, so a machine
    shared with other jobs slows them alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, entry in fns.items():
            prelude, fn = entry if isinstance(entry, tuple) else (None, entry)
            if prelude is not None:
                prelude()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if r:
                out[name].append(time.perf_counter() - start)
    return out if raw else {name: statistics.median(v) for name, v in out.items()}
