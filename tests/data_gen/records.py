"""Hand-made state records and a small harvest directory, shared by the data_gen and train tests."""

import numpy as np

from depmask.data_gen.schema import StateRecord, records_to_table
from depmask.data_gen.shards import (
    write_json_atomic,
    write_manifest,
    write_shard,
)

D = 6


FP = "mock@local:0"


def record(eid: str, step: int, m: int, seed: int = 0, fp: str = FP) -> StateRecord:
    rng = np.random.default_rng(seed)
    return StateRecord(
        fingerprint=fp, example_id=eid, task="t", policy="low_confidence", step=step, block=0,
        prompt_length=3, tokens=np.arange(3 + m), positions=np.arange(m) + 3,
        candidate=rng.integers(0, 9, m), confidence=rng.random(m), entropy=rng.random(m),
        committed=np.arange(m) == 0, hidden=rng.standard_normal((m, D)).astype(np.float16),
        attention=rng.random((m, m)), tv=rng.random((m, m)), kl=rng.random((m, m)),
    )


def make_harvest(tmp_path, groups=(("a", "b"), ("c",)), steps=2):
    write_json_atomic(tmp_path / "harvest.json", {"schema_version": 1, "fingerprint": FP, "hidden_size": D,
                                                  "examples": sum(len(g) for g in groups), "config": {}})
    for gi, ids in enumerate(groups):
        recs = [record(e, s, m=4 - s, seed=gi * 10 + s) for e in ids for s in range(steps)]
        write_shard(tmp_path, records_to_table(recs, D), list(ids), FP)
    write_manifest(tmp_path)
    return tmp_path
