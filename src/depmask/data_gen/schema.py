"""The harvest record: one row per (example, step) decoding state, as HF `datasets` features.

Shapes: `m` masked positions of the state's block, `d` hidden size, `l` canvas length.

Columns (the one place they are defined; `train/` and `eval/` read these names):

| column        | feature                   | meaning                                                 |
|---------------|---------------------------|---------------------------------------------------------|
| fingerprint   | string                    | the base model's fingerprint                            |
| example_id    | string                    | the example (splits are by this, never by state)        |
| task          | string                    | task name, or the prompt file's name                    |
| policy        | string                    | the trajectory policy that produced the state           |
| step          | int32                     | forward index of the state in the trajectory (0-based)  |
| block         | int32                     | block index                                             |
| prompt_length | int32                     | prompt tokens (the canvas starts at 0, no padding)      |
| tokens        | [l] int32                 | the canvas at this state (mask id at masked positions)  |
| positions     | [m] int32                 | canvas indices of the masked positions of the block     |
| candidate     | [m] int32                 | the value the decoder would commit at each              |
| confidence    | [m] float32               | p(candidate)                                            |
| entropy       | [m] float32               | entropy of the prediction, nats                         |
| committed     | [m] bool                  | committed by the trajectory policy at this step         |
| hidden        | [m, d] float16            | final hidden states at the masked positions             |
| attention     | [m, m] float32            | captured attention among them (row attends to column)   |
| tv            | [m, m] float32            | influence: TV change at row i when column j is fixed    |
| kl            | [m, m] float32            | KL(p_i after ‖ p_i before), same layout                 |

`tv` / `kl` follow `depmask.decoding.influence`: with `topk` = 1 the column is fixed to its
candidate; with `topk` > 1 they are the expectation over the top-k values (renormalised).
This module converts records to Arrow tables and back; it does not write files (`shards` does).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
from datasets import Features, List, Value

SCHEMA_VERSION = 1
SCALARS = ("fingerprint", "example_id", "task", "policy", "step", "block", "prompt_length")
VECTORS = {"tokens": np.int32, "positions": np.int32, "candidate": np.int32, "confidence": np.float32,
           "entropy": np.float32, "committed": np.bool_}
MATRICES = ("attention", "tv", "kl")


def record_features(hidden_size: int) -> Features:
    """The `datasets.Features` of a harvest with hidden size `hidden_size`."""
    if hidden_size < 1:
        raise ValueError(f"`hidden_size` ({hidden_size}) must be >= 1")
    return Features(
        {
            "fingerprint": Value("string"),
            "example_id": Value("string"),
            "task": Value("string"),
            "policy": Value("string"),
            "step": Value("int32"),
            "block": Value("int32"),
            "prompt_length": Value("int32"),
            "tokens": List(Value("int32")),
            "positions": List(Value("int32")),
            "candidate": List(Value("int32")),
            "confidence": List(Value("float32")),
            "entropy": List(Value("float32")),
            "committed": List(Value("bool")),
            "hidden": List(List(Value("float16"), length=hidden_size)),
            "attention": List(List(Value("float32"))),
            "tv": List(List(Value("float32"))),
            "kl": List(List(Value("float32"))),
        }
    )


@dataclass
class StateRecord:
    """One harvested state (numpy arrays; see the module docstring for the columns)."""

    fingerprint: str
    example_id: str
    task: str
    policy: str
    step: int
    block: int
    prompt_length: int
    tokens: np.ndarray  # [l]
    positions: np.ndarray  # [m]
    candidate: np.ndarray  # [m]
    confidence: np.ndarray  # [m]
    entropy: np.ndarray  # [m]
    committed: np.ndarray  # [m] bool
    hidden: np.ndarray  # [m, d] float16
    attention: np.ndarray  # [m, m]
    tv: np.ndarray  # [m, m]
    kl: np.ndarray  # [m, m]

    @property
    def num_masked(self) -> int:
        return int(self.positions.shape[0])


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(StateRecord))


def _offsets(lengths: list[int]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))


def _vector_column(values: list[np.ndarray], dtype) -> pa.Array:
    flat = np.concatenate([np.asarray(v, dtype=dtype).ravel() for v in values]) if values else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(_offsets([len(v) for v in values]), pa.array(flat))


def _matrix_column(values: list[np.ndarray]) -> pa.Array:
    """[m, m] float32 per record → list<list<float32>> (rows of the record's own width)."""
    # (its own shape, not `reshape(m, -1)`: a record with no masked position is [0, 0], which -1 cannot infer)
    rows = [np.asarray(v, dtype=np.float32).reshape(v.shape[0], v.shape[1] if np.ndim(v) == 2 else -1) for v in values]
    flat = np.concatenate([r.ravel() for r in rows]) if rows else np.zeros(0, np.float32)
    widths = [w for r in rows for w in [r.shape[1]] * r.shape[0]]
    inner = pa.ListArray.from_arrays(_offsets(widths), pa.array(flat))
    return pa.ListArray.from_arrays(_offsets([r.shape[0] for r in rows]), inner)


def records_to_table(records: list[StateRecord], hidden_size: int) -> pa.Table:
    """An Arrow table with the harvest schema (built from numpy buffers, no Python lists of floats)."""
    features = record_features(hidden_size)
    for r in records:
        m = r.num_masked
        if r.hidden.shape != (m, hidden_size):
            raise ValueError(f"record {r.example_id}@{r.step}: `hidden` is {r.hidden.shape}, expected ({m}, {hidden_size})")
        for name in MATRICES:
            if getattr(r, name).shape != (m, m):
                raise ValueError(f"record {r.example_id}@{r.step}: `{name}` is {getattr(r, name).shape}, expected ({m}, {m})")
    cols: dict[str, pa.Array] = {}
    for name in SCALARS:
        vals = [getattr(r, name) for r in records]
        cols[name] = pa.array(vals, type=features.arrow_schema.field(name).type)
    for name, dtype in VECTORS.items():
        cols[name] = _vector_column([getattr(r, name) for r in records], dtype)
    hidden = [np.asarray(r.hidden, dtype=np.float16) for r in records]
    flat = np.concatenate([h.ravel() for h in hidden]) if hidden else np.zeros(0, np.float16)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), hidden_size)
    cols["hidden"] = pa.ListArray.from_arrays(_offsets([h.shape[0] for h in hidden]), fixed)
    for name in MATRICES:
        cols[name] = _matrix_column([getattr(r, name) for r in records])
    schema = features.arrow_schema
    return pa.Table.from_arrays([cols[f.name].cast(f.type) for f in schema], schema=schema)


def check_schema(schema: pa.Schema, hidden_size: int) -> list[str]:
    """Differences between `schema` and the harvest schema (empty when they agree)."""
    expected = record_features(hidden_size).arrow_schema
    problems = []
    names = [f.name for f in schema]
    for f in expected:
        if f.name not in names:
            problems.append(f"missing column `{f.name}`")
        elif not schema.field(f.name).type.equals(f.type):
            problems.append(f"column `{f.name}` is {schema.field(f.name).type}, expected {f.type}")
    problems += [f"unexpected column `{n}`" for n in names if n not in expected.names]
    return problems
