"""Records → Arrow → datasets round trip, atomic shards, and what `verify` reports."""

import json
import os

import numpy as np
import pytest

from depmask.data_gen.dataset import HarvestError, load_harvest
from depmask.data_gen.schema import check_schema, record_features, records_to_table
from depmask.data_gen.shards import (
    MANIFEST_JSON,
    clean_incomplete,
    clean_stale_temporaries,
    done_examples,
    write_json_atomic,
    write_manifest,
    write_shard,
)
from depmask.data_gen.verify import verify_harvest
from tests.data_gen.records import FP, D, make_harvest, record


def test_round_trip_through_datasets(tmp_path):
    recs = [record("a", 0, 4, seed=1), record("a", 1, 2, seed=2)]
    write_shard(tmp_path, records_to_table(recs, D), ["a"], FP)  # no manifest yet: sidecars are read
    ds = load_harvest(tmp_path, verify=False)
    assert len(ds) == 2
    for r, row in zip(recs, ds):
        for name in ("positions", "candidate", "committed", "tokens"):
            np.testing.assert_array_equal(row[name], getattr(r, name))
        for name in ("attention", "tv", "kl", "confidence", "entropy"):
            np.testing.assert_allclose(row[name], getattr(r, name).astype(np.float32))
        np.testing.assert_array_equal(row["hidden"].astype(np.float16), r.hidden)
        assert row["example_id"] == r.example_id and row["step"] == r.step


def test_record_shapes_are_checked():
    bad = record("a", 0, 3)
    bad.tv = np.zeros((3, 2))
    with pytest.raises(ValueError, match="`tv`"):
        records_to_table([bad], D)
    with pytest.raises(ValueError, match="hidden"):
        records_to_table([record("a", 0, 3)], D + 1)


def test_check_schema_names_differences():
    schema = record_features(D).arrow_schema
    assert check_schema(schema, D) == []
    assert any("hidden" in p for p in check_schema(schema, D + 2))
    assert "missing column `tv`" in check_schema(schema.remove(schema.get_field_index("tv")), D)


def test_verify_ok_and_done_examples(tmp_path):
    make_harvest(tmp_path)
    report = verify_harvest(tmp_path)
    assert report.ok, report.text()
    assert (report.shards, report.rows, report.examples) == (2, 6, 3)
    assert done_examples(tmp_path) == {"a", "b", "c"}


def test_truncated_shard_is_named(tmp_path):
    make_harvest(tmp_path)
    shard = sorted((tmp_path / "shards").glob("*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    report = verify_harvest(tmp_path)
    assert not report.ok
    assert any(shard.name in p and "truncated" in p for p in report.problems), report.text()
    with pytest.raises(HarvestError, match=shard.name):
        load_harvest(tmp_path)


def test_foreign_shard_and_files_are_named(tmp_path):
    make_harvest(tmp_path)
    foreign = records_to_table([record("z", 0, 3, fp="other@local:1")], D)
    info = write_shard(tmp_path, foreign, ["z"], "other@local:1")
    (tmp_path / "shards" / "notes.txt").write_text("hello")
    report = verify_harvest(tmp_path)
    text = report.text()
    assert any(info.name in p and "foreign shard" in p for p in report.problems), text
    assert any("notes.txt" in p for p in report.problems), text


def test_duplicates_missing_examples_and_manifest(tmp_path):
    make_harvest(tmp_path, groups=(("a", "b"), ("b",)))
    (tmp_path / "harvest.json").write_text(json.dumps({"schema_version": 1, "fingerprint": FP,
                                                       "hidden_size": D, "examples": 4, "config": {}}))
    (tmp_path / MANIFEST_JSON).unlink()
    problems = "\n".join(verify_harvest(tmp_path).problems)
    assert "example 'b' is in 2 shards" in problems
    assert "appear more than once" in problems
    assert "incomplete: 2 of 4 examples" in problems
    assert "manifest.json: missing" in problems


def test_clean_incomplete_removes_partial_writes(tmp_path):
    make_harvest(tmp_path)
    shards = tmp_path / "shards"
    (shards / ".tmp-shard-x.arrow.123").write_bytes(b"partial")
    (shards / "shard-orphan.arrow").write_bytes(b"no sidecar")
    problems = verify_harvest(tmp_path).problems
    assert any("shard-orphan.arrow" in p and "without a sidecar" in p for p in problems)
    assert any(".tmp-shard-x" in p for p in problems)
    assert sorted(clean_incomplete(tmp_path)) == [".tmp-shard-x.arrow.123", "shard-orphan.arrow"]
    assert verify_harvest(tmp_path).ok


def test_not_a_harvest(tmp_path):
    assert "harvest.json: missing" in verify_harvest(tmp_path).text()
    (tmp_path / "harvest.json").write_text("{not json")
    assert "unreadable" in verify_harvest(tmp_path).text()


def test_loaded_harvest_is_memory_mapped(tmp_path):
    from datasets.table import MemoryMappedTable

    make_harvest(tmp_path)
    ds = load_harvest(tmp_path)
    blocks = [t for row in ds.data.blocks for t in row] if hasattr(ds.data, "blocks") else [ds.data]
    assert blocks and all(isinstance(t, MemoryMappedTable) for t in blocks)  # pages come from disk on demand


def test_a_filter_over_the_loaded_harvest_leaves_it_valid(tmp_path):
    """`datasets` writes a filter's result as `cache-*.arrow` next to the shards; before verify
    skipped those, filtering a loaded harvest once made it fail verification for good."""
    make_harvest(tmp_path)
    ds = load_harvest(tmp_path)
    kept = ds.filter(lambda e: e != "a", input_columns="example_id")
    assert len(kept) == 4 and list((tmp_path / "shards").glob("cache-*.arrow"))
    assert verify_harvest(tmp_path).ok, verify_harvest(tmp_path).text()
    assert len(load_harvest(tmp_path)) == len(ds)  # the cache is not read as a shard


def test_column_values_reads_a_column_as_a_plain_list():
    from datasets import Dataset, concatenate_datasets

    from depmask.data_gen.dataset import column_values

    parts = [Dataset.from_dict({"example_id": [f"t:{k}:{i}" for i in range(3)], "x": [[k, i] for i in range(3)]})
             for k in range(4)]
    data = concatenate_datasets(parts).with_format("numpy")  # as `load_harvest` hands it over
    ids = column_values(data, "example_id")
    assert ids == [f"t:{k}:{i}" for k in range(4) for i in range(3)] and all(type(e) is str for e in ids)
    assert column_values(data.with_format(None), "example_id") == ids
    assert [list(v) for v in column_values(data.with_format(None), "x")] == [[k, i] for k in range(4) for i in range(3)]


def test_verify_checks_sidecar_fields_the_manifests_figures_and_which_examples(tmp_path):
    """A sidecar with `example_ids: null` raised a TypeError out of verify; a manifest with wrong
    row counts and digests, and the right number of the wrong examples, were reported OK."""
    import hashlib

    make_harvest(tmp_path)
    spec = json.loads((tmp_path / "harvest.json").read_text())
    spec["examples_sha256"] = hashlib.sha256("\n".join(["a", "b", "c"]).encode()).hexdigest()
    (tmp_path / "harvest.json").write_text(json.dumps(spec))
    assert verify_harvest(tmp_path).ok
    spec["examples_sha256"] = hashlib.sha256("\n".join(["a", "b", "d"]).encode()).hexdigest()
    (tmp_path / "harvest.json").write_text(json.dumps(spec))
    assert any("not the ones harvest.json asks for" in p for p in verify_harvest(tmp_path).problems)

    (tmp_path / "m").mkdir()
    make_harvest(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MANIFEST_JSON).read_text())
    manifest["shards"][0]["rows"] += 1
    manifest["shards"][1]["sha256"] = "0" * 64
    (tmp_path / "m" / MANIFEST_JSON).write_text(json.dumps(manifest))
    problems = "\n".join(verify_harvest(tmp_path / "m").problems)
    assert "rows" in problems and "sha256" in problems and "its sidecar says" in problems

    (tmp_path / "s").mkdir()
    make_harvest(tmp_path / "s")
    sidecar = sorted((tmp_path / "s" / "shards").glob("*.json"))[0]
    side = json.loads(sidecar.read_text())
    side["example_ids"] = None
    sidecar.write_text(json.dumps(side))
    report = verify_harvest(tmp_path / "s")  # a report, not a stack trace
    assert any(sidecar.name in p and "not a shard sidecar (example_ids is NoneType)" in p for p in report.problems)


def test_a_damaged_shard_is_not_done_before_the_cleaning_either(tmp_path):
    # ranks started together (torchrun, SLURM) may read before rank 0 cleans: they counted a
    # truncated shard's examples as done and split other work than rank 0
    make_harvest(tmp_path)
    assert done_examples(tmp_path) == {"a", "b", "c"}
    (shard,) = [p for p in (tmp_path / "shards").glob("shard-*.arrow")
                if "c" in json.loads(p.with_suffix(".json").read_text())["example_ids"]]
    shard.write_bytes(shard.read_bytes()[:-8])  # truncated
    assert done_examples(tmp_path) == {"a", "b"}  # before the cleaning, as after it
    clean_incomplete(tmp_path)
    assert done_examples(tmp_path) == {"a", "b"}


def test_an_unreadable_sidecar_stops_the_resume_before_any_work(tmp_path):
    # skipped quietly, it let the whole harvest run and then failed writing the manifest
    make_harvest(tmp_path)
    (tmp_path / "shards" / "shard-stray.json").write_text("{not json")
    with pytest.raises(ValueError, match="shard-stray.json: not a shard sidecar"):
        done_examples(tmp_path)


def test_a_modified_shard_of_the_same_size_is_named_with_what_to_do(tmp_path):
    """A resume compares sizes only, so a same-size modification stays; `verify` said "run the same
    harvest command again", which kept it. It now says which files to delete first."""
    make_harvest(tmp_path)
    shard = sorted((tmp_path / "shards").glob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = "\n".join(verify_harvest(tmp_path).problems)
    assert f"{shard.name}: contents do not match its sidecar (same size, different sha256" in problems
    assert f"delete {shard.name} and {shard.stem}.json, then run the same harvest command again" in problems
    assert clean_incomplete(tmp_path) == []  # not a resume's to judge (it reads sizes): hence the advice


def test_temporary_files_of_the_harvest_s_own_files_are_named_and_cleaned(tmp_path):
    """A write of harvest.json / harvest.yaml / manifest.json killed midway left `.tmp-*` in the
    top folder: `verify` said OK and nothing removed it."""
    make_harvest(tmp_path)
    dead, alive = tmp_path / ".tmp-harvest.yaml.999999999", tmp_path / f".tmp-manifest.json.{os.getpid()}"
    dead.write_text("partial")
    alive.write_text("being written")
    users = tmp_path / ".tmp-my-notes.txt"  # a file of the user's with the same prefix: not ours
    users.write_text("mine")
    problems = verify_harvest(tmp_path).problems
    assert any(dead.name in p and "temporary file of an interrupted write" in p for p in problems)
    assert not any(users.name in p for p in problems)
    assert clean_stale_temporaries(tmp_path) == [dead.name]  # a live writer's file is kept
    assert not dead.exists() and alive.exists() and users.exists()


def test_a_state_with_no_masked_position_round_trips():
    """`reshape(0, -1)` could not infer the width of a [0, 0] matrix: a bare numpy error."""
    table = records_to_table([record("a", 0, m=0), record("a", 1, m=2)], D)
    assert table.num_rows == 2 and table.column("tv").to_pylist()[0] == []


def test_verify_names_foreign_shards_extra_examples_and_a_manifest_that_disagrees(tmp_path):
    """A shard written by another harvest under the same name, extra examples ("incomplete: 8 of 6",
    whose advice — run again — changed nothing), a shard listed twice and wrong totals passed or
    were misreported; a resume deleted `datasets`' cache files as damaged shards."""
    from depmask.data_gen.shards import clean_incomplete, foreign_shards, harvest_id

    for name in ("h", "h2", "h3"):
        (tmp_path / name).mkdir()
    out = make_harvest(tmp_path / "h")
    spec = json.loads((out / "harvest.json").read_text())
    assert verify_harvest(out).ok and foreign_shards(out, harvest_id(spec)) == []
    (out / "shards" / "cache-0123.arrow").write_bytes(b"datasets cache")
    assert clean_incomplete(out) == [] and (out / "shards" / "cache-0123.arrow").exists()
    # a shard of another harvest (its sidecar names another harvest id) under a name of this one's
    other = write_shard(tmp_path / "other", records_to_table([record("c", 0, m=2)], D), ["c"], FP, harvest="f" * 16)
    for name in (other.name, other.name.replace(".arrow", ".json")):
        (out / "shards" / name).write_bytes((tmp_path / "other" / "shards" / name).read_bytes())
    assert foreign_shards(out, harvest_id(spec)) == [other.name]
    problems = verify_harvest(out).problems
    assert any(f"{other.name}: written by another harvest (harvest id {'f' * 16}" in p for p in problems), problems
    # more examples than asked for
    out2 = make_harvest(tmp_path / "h2")
    write_shard(out2, records_to_table([record("z", 0, m=2)], D), ["z"], FP)
    problems = verify_harvest(out2).problems
    assert any("4 examples harvested, more than the 3 harvest.json asks for" in p for p in problems), problems
    assert not any("run the same harvest command again" in p for p in problems if "examples harvested" in p)
    # a manifest that lists a shard twice, or whose totals are not the shards'
    out3 = make_harvest(tmp_path / "h3")
    manifest = json.loads((out3 / "manifest.json").read_text())
    manifest["shards"].append(manifest["shards"][0])
    manifest["rows"] = 999
    (out3 / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_harvest(out3).problems
    assert any("lists shard-" in p and "2 times" in p for p in problems), problems
    assert any("manifest.json: rows 999, the shards" in p for p in problems), problems


def test_verify_compares_a_sidecar_s_per_example_states_with_its_rows(tmp_path):
    """The sidecar's `states` (example → rows written) was never compared with the table: a sidecar
    that moved a state from one example to another, or named an extra example, verified OK."""
    make_harvest(tmp_path)
    sidecar = next(p for p in (tmp_path / "shards").glob("*.json") if "a" in json.loads(p.read_text())["states"])
    side = json.loads(sidecar.read_text())
    shard = side["name"]
    side["states"]["a"] += 1
    side["states"]["b"] -= 1
    sidecar.write_text(json.dumps(side))
    problems = verify_harvest(tmp_path).problems
    assert any(shard in p and "example 'a' has 2 rows, its sidecar says 3 states" in p for p in problems), problems

    side["states"] = {"a": 2, "b": 2, "zz": 0}
    sidecar.write_text(json.dumps(side))
    problems = verify_harvest(tmp_path).problems
    assert any(shard in p and "example 'zz'" in p for p in problems), problems
    side["states"] = {"a": 2, "b": 2}
    sidecar.write_text(json.dumps(side))
    assert verify_harvest(tmp_path).ok


def test_verify_reads_each_shard_s_rows_schema_and_fingerprints(tmp_path):
    """A shard consistent with its own sidecar (sizes and digest match) can still hold rows of
    another model or example, another hidden size, or another row count than the sidecar says;
    no test made `verify` meet one, so each check could be dropped unseen."""
    cases = {
        "fp": ([record("a", 0, 3, fp="other@local:1")], ["a"], D, "rows from another model"),
        "stray": ([record("a", 0, 3), record("z", 1, 3)], ["a", "z"], D, "rows of examples its sidecar does not list"),
        "width": ([record("a", 0, 3)], ["a"], D, "schema differs"),
    }
    for name, (recs, ids, width, message) in cases.items():
        out = tmp_path / name
        out.mkdir()
        write_json_atomic(out / "harvest.json", {"schema_version": 1, "fingerprint": FP, "hidden_size": D + (name == "width"),
                                                 "examples": 1, "config": {}})
        write_shard(out, records_to_table(recs, width), ids, FP)
        write_manifest(out)
        if name == "stray":  # its sidecar edited to list `a` alone: sizes and digest still match
            (sidecar,) = (out / "shards").glob("*.json")
            side = json.loads(sidecar.read_text())
            side.update(example_ids=["a"], states={"a": 1})
            sidecar.write_text(json.dumps(side))
        problems = verify_harvest(out).problems
        assert any(message in p for p in problems), (name, problems)
    out = tmp_path / "rows"  # the sidecar's row count edited: its sizes and digest still match
    out.mkdir()
    write_json_atomic(out / "harvest.json", {"schema_version": 1, "fingerprint": FP, "hidden_size": D, "examples": 1,
                                             "config": {}})
    write_shard(out, records_to_table([record("a", 0, 3), record("a", 1, 2)], D), ["a"], FP)
    write_manifest(out)
    (sidecar,) = (out / "shards").glob("*.json")
    side = json.loads(sidecar.read_text())
    side["rows"] = 3
    sidecar.write_text(json.dumps(side))
    assert any("2 rows, its sidecar says 3" in p for p in verify_harvest(out).problems)
