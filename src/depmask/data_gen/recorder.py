"""`Recorder`: a policy wrapper that records chosen decoding states, with their influences.

Shapes: `b` rows of the step, `n` recorded rows, `l` canvas, `m` masked positions of the block
(padded to the widest recorded row), `c` block columns, `v` vocabulary, `d` hidden size.

The trajectory is produced by the shared loop (`generate`) with the wrapped policy choosing the
commits, so harvested states are exactly the states that decoder visits. At a kept step the
recorder reads the state the loop built (hidden states and attention requested through
`needs_hidden` / `needs_attention`, the block's log-probabilities through `needs_probe`) and
measures the influence matrix with the loop's counted `probe` forwards — the step's own forward
is the unperturbed one, so a state costs 1 + ⌈copies / chunk_size⌉ forwards. It never changes
what the wrapped policy commits.
"""

from __future__ import annotations

import numpy as np
import torch

from depmask.data_gen.schema import StateRecord
from depmask.decoding.influence import gather_positions, pairwise_influence, top_values
from depmask.decoding.policies.base import Policy
from depmask.decoding.state import StepState


class Recorder(Policy):
    """Delegate to `policy`; at the kept steps of each batch row, record the state."""

    name = "recorder"
    needs_hidden = True
    needs_attention = True
    needs_probe = True

    def __init__(
        self,
        policy: Policy,
        keep: torch.Tensor,  # [b, s] bool: keep the state at forward t of row r (s ≥ any trajectory)
        pad: list[int],  # left padding of each batch row (subtracted from canvas indices)
        meta: list[dict],  # per batch row: example_id, task, policy, fingerprint
        mask_id: int,
        topk: int = 1,
        chunk_size: int = 64,
    ):
        self.policy, self.keep, self.pad, self.meta = policy, keep, pad, meta
        self.mask_id, self.topk, self.chunk_size = mask_id, topk, chunk_size
        self.counter = torch.zeros(keep.shape[0], dtype=torch.long)  # forwards seen per row
        self.records: list[StateRecord] = []
        self.pairs = 0  # influence entries measured (ordered pairs i ≠ j)
        self.probe_forwards = 0  # batched perturbed forwards spent

    def bind(self, denoiser) -> None:
        """Let the wrapped policy check the model and move what it holds (a learned head) to it."""
        if hasattr(self.policy, "bind"):
            self.policy.bind(denoiser)

    def select(self, state: StepState) -> torch.Tensor:
        commit = self.policy.select(state)  # [b, l]
        rows = state.rows.cpu()
        t = self.counter[rows]
        self.counter[rows] += 1
        inside = t < self.keep.shape[1]
        want = torch.zeros_like(inside)
        want[inside] = self.keep[rows[inside], t[inside]]
        local = want.nonzero().squeeze(1)  # [n] indices into the state's rows
        if local.numel():
            self._record(state, local.to(state.mask.device), t[local].tolist(), commit)
        return commit

    def _record(self, state: StepState, local: torch.Tensor, steps: list[int], commit: torch.Tensor) -> None:
        mask = state.mask[local]  # [n, l]
        m = int(mask.sum(1).max())
        order = (~mask).to(torch.int8).argsort(dim=1, stable=True)  # masked positions first, in order
        positions = order[:, :m]  # [n, m]
        valid = mask.gather(1, positions)  # [n, m]
        cols = (positions - state.block_start).clamp(0, state.block_end - state.block_start - 1)
        base = gather_positions(state.block_log_probs[local], cols)  # [n, m, v]
        if self.topk == 1:
            values, weights = state.x0[local].gather(1, positions).unsqueeze(-1), None  # [n, m, 1]
        else:
            values, weights = top_values(base, self.topk, forbid=self.mask_id)

        def forward(copies: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            return state.probe(copies, local[states])

        inf = pairwise_influence(forward, state.tokens[local], positions, valid, base, values,
                                 weights, chunk_size=self.chunk_size)
        self.probe_forwards += inf.forwards
        hidden = gather_positions(state.hidden[local], positions)  # [n, m, d]
        att = state.attention[local]  # [n, l, l]
        att = att.gather(1, positions[:, :, None].expand(-1, -1, att.shape[2]))  # [n, m, l]
        att = att.gather(2, positions[:, None, :].expand(-1, m, -1))  # [n, m, m]
        per_row = {
            "candidate": state.x0[local].gather(1, positions),
            "confidence": state.confidence[local].gather(1, positions),
            "entropy": state.entropy[local].gather(1, positions),
            "committed": commit[local].gather(1, positions),
        }
        host = {k: v.cpu().numpy() for k, v in per_row.items()}
        hidden = hidden.to(torch.float16).cpu().numpy()
        att, tv, kl = (x.float().cpu().numpy() for x in (att, inf.tv, inf.kl))
        positions, valid, tokens = positions.cpu().numpy(), valid.cpu().numpy(), state.tokens[local].cpu().numpy()
        rows = state.rows[local].cpu().tolist()
        for n, (row, step) in enumerate(zip(rows, steps)):
            k = int(valid[n].sum())
            pad = self.pad[row]
            meta = self.meta[row]
            self.pairs += k * (k - 1)
            self.records.append(StateRecord(
                fingerprint=meta["fingerprint"], example_id=meta["example_id"], task=meta["task"],
                policy=meta["policy"], step=step, block=state.block, prompt_length=meta["prompt_length"],
                tokens=tokens[n, pad:].astype(np.int32),
                positions=(positions[n, :k] - pad).astype(np.int32),
                candidate=host["candidate"][n, :k].astype(np.int32),
                confidence=host["confidence"][n, :k].astype(np.float32),
                entropy=host["entropy"][n, :k].astype(np.float32),
                committed=host["committed"][n, :k],
                hidden=hidden[n, :k],
                attention=att[n, :k, :k], tv=tv[n, :k, :k], kl=kl[n, :k, :k],
            ))
