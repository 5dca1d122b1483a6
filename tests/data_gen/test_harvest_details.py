"""Details of the harvest's writers and readers that no other test pinned: sidecar fields, the
manifest's figures, cleaning, `verify`'s less common reports, `harvest.json` checks, and the
recorder's counters."""

import hashlib
import json

import numpy as np
import pytest
import torch

from depmask.data_gen import HarvestConfig, Recorder, harvest_group
from depmask.data_gen.dataset import HarvestError, harvest_digest, harvest_info, load_harvest
from depmask.data_gen.schema import check_schema, record_features, records_to_table
from depmask.data_gen.shards import (
    MANIFEST_JSON,
    clean_incomplete,
    clean_stale_temporaries,
    completed_shards,
    harvest_id,
    read_sidecar,
    shard_name,
    write_json_atomic,
    write_manifest,
    write_shard,
)
from depmask.data_gen.verify import verify_harvest
from depmask.decoding import build_policy, generate
from tests.conftest import EMBEDDED
from tests.data_gen.harvest_inputs import _items
from tests.data_gen.records import FP, D, make_harvest, record

# --- schema ---------------------------------------------------------------------------------------


def test_schema_refuses_a_zero_hidden_size_a_bad_attention_and_names_extra_columns():
    """`hidden_size` 0, an `attention` of another shape than [m, m] and an unexpected column were
    each accepted silently (only `tv` and `hidden` shapes were tested)."""
    with pytest.raises(ValueError, match=r"`hidden_size` \(0\) must be >= 1"):
        record_features(0)
    bad = record("a", 0, 3)
    bad.attention = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"`attention` is \(3, 2\), expected \(3, 3\)"):
        records_to_table([bad], D)
    schema = record_features(D).arrow_schema
    extra = schema.append(schema.field("step").with_name("extra"))
    assert check_schema(extra, D) == ["unexpected column `extra`"]


# --- shards: names, ids, sidecars -----------------------------------------------------------------


def test_shard_names_do_not_depend_on_the_order_of_the_example_ids():
    """Every rank names a shard from its example ids; another order must give the same name, or a
    resume whose batches come in another order writes the same examples twice."""
    assert shard_name(["b", "a", "c"]) == shard_name(["a", "b", "c"]) != shard_name(["a", "b"])


def test_harvest_id_follows_every_setting_the_data_depends_on():
    """A shard of the same examples under another precision (or fingerprint, config, ...) must be
    told apart; settings that do not change the data (model path, revision) must not."""
    spec = {"schema_version": 1, "fingerprint": "m@1", "hidden_size": 8, "config": {"topk": 1},
            "examples_sha256": "e", "items_sha256": "i", "precision": "32-true", "state_choice": "x",
            "model": "models/a", "revision": "r1"}
    base = harvest_id(spec)
    for key, other in [("schema_version", 2), ("fingerprint", "m@2"), ("hidden_size", 9), ("config", {"topk": 2}),
                       ("examples_sha256", "f"), ("items_sha256", "j"), ("precision", "bf16-mixed"),
                       ("state_choice", "y")]:
        assert harvest_id({**spec, key: other}) != base, key
    assert harvest_id({**spec, "model": "elsewhere/a", "revision": "r2"}) == base


@pytest.mark.parametrize("edit, message", [
    ({"rows": True}, "rows is bool"),
    ({"harvest": 5}, "harvest is int"),
    ({"example_ids": ["a", 1]}, "example_ids are not all text"),
    ({"colour": "red"}, "not a shard sidecar"),
])
def test_a_sidecar_with_a_wrong_field_is_named_not_raised(tmp_path, edit, message):
    """A sidecar is checked field by field: a bool for a count, a non-text harvest id or example id,
    or an unknown field is a ValueError naming the file (verify reports it; no stack trace)."""
    make_harvest(tmp_path)
    sidecar = sorted((tmp_path / "shards").glob("shard-*.json"))[0]
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **edit}))
    with pytest.raises(ValueError, match=rf"{sidecar.name}: .*{message}"):
        read_sidecar(sidecar)
    assert any(sidecar.name in p and message in p for p in verify_harvest(tmp_path).problems)


def test_a_sidecar_without_its_shard_is_not_a_completed_shard(tmp_path):
    """`completed_shards` (and so the manifest and `shard_paths`) lists a shard only if its file exists."""
    make_harvest(tmp_path)
    first, second = sorted((tmp_path / "shards").glob("shard-*.arrow"))
    first.unlink()
    assert [i.name for i in completed_shards(tmp_path)] == [second.name]
    assert [s["name"] for s in write_manifest(tmp_path)["shards"]] == [second.name]


def test_the_manifest_counts_examples_per_shard_and_keeps_the_extra_fields(tmp_path):
    """Each manifest entry's `examples` is the shard's examples (not its rows); `extra` (the
    harvest passes fingerprint and hidden size) lands in the manifest."""
    make_harvest(tmp_path)  # shards of ("a", "b") and ("c",), two states each
    manifest = write_manifest(tmp_path, {"fingerprint": FP, "hidden_size": D})
    assert sorted((s["examples"], s["rows"]) for s in manifest["shards"]) == [(1, 2), (2, 4)]
    on_disk = json.loads((tmp_path / MANIFEST_JSON).read_text())
    assert on_disk["fingerprint"] == FP and on_disk["hidden_size"] == D and on_disk["examples"] == 3


# --- cleaning -------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "grown"])
def test_clean_incomplete_removes_a_resized_shard_with_its_sidecar(tmp_path, damage):
    """A shard whose size is not its sidecar's (shorter or longer) goes with its sidecar: a sidecar
    left behind names a missing shard, which `verify` reports after the resume."""
    make_harvest(tmp_path)
    shard = sorted((tmp_path / "shards").glob("shard-*.arrow"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[:-8] if damage == "truncated" else data + b"\0" * 8)
    sidecar = shard.with_suffix(".json")
    assert sorted(clean_incomplete(tmp_path)) == sorted([shard.name, sidecar.name])
    assert not shard.exists() and not sidecar.exists()


def test_stale_temporaries_are_only_the_harvest_s_own_names_with_a_pid(tmp_path):
    """`.tmp-harvest.json.12.bak` is a user's file (not `<name>.<pid>` exactly): neither reported
    nor removed (it raised a ValueError reading its pid); a pid too large to signal is kept."""
    make_harvest(tmp_path)
    users = tmp_path / ".tmp-harvest.json.12.bak"
    users.write_text("mine")
    huge = tmp_path / ".tmp-manifest.json.99999999999999999999"
    huge.write_text("whose?")
    assert not any(users.name in p for p in verify_harvest(tmp_path).problems)
    assert clean_stale_temporaries(tmp_path) == []
    assert users.exists() and huge.exists()


# --- verify ---------------------------------------------------------------------------------------


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_verify_reports_another_schema_version_and_a_bad_hidden_size(tmp_path):
    make_harvest(tmp_path)
    _edit_json(tmp_path / "harvest.json", schema_version=2)
    assert any("schema_version 2, expected 1" in p for p in verify_harvest(tmp_path).problems)
    _edit_json(tmp_path / "harvest.json", schema_version=1, hidden_size="six")
    report = verify_harvest(tmp_path)  # a report, not a ValueError out of int()
    assert any(p.startswith("harvest.json: unreadable (ValueError") for p in report.problems)


def test_verify_counts_one_missing_example_and_prints_found_over_expected(tmp_path):
    make_harvest(tmp_path)
    _edit_json(tmp_path / "harvest.json", examples=4)
    report = verify_harvest(tmp_path)
    assert any("incomplete: 3 of 4 examples" in p for p in report.problems), report.problems
    assert ", 3/4 examples" in report.text()  # found / expected


def test_an_example_that_produced_no_state_counts_as_harvested(tmp_path):
    """A shard covers every example of its batch, with or without states: counting the examples
    seen in its rows instead reported such a harvest incomplete forever (a resume skips them)."""
    write_json_atomic(tmp_path / "harvest.json", {"schema_version": 1, "fingerprint": FP, "hidden_size": D,
                                                  "examples": 2, "config": {}})
    info = write_shard(tmp_path, records_to_table([record("a", 0, 3)], D), ["a", "b"], FP)
    write_manifest(tmp_path)
    assert info.states == {"a": 1, "b": 0}
    report = verify_harvest(tmp_path)
    assert report.ok and report.examples == 2, report.text()


def test_a_shard_with_a_state_of_an_unlisted_example_is_refused_before_writing(tmp_path):
    """Its sidecar would list fewer examples than the shard holds (a bare KeyError before)."""
    with pytest.raises(ValueError, match=r"example 'z', which is not in `example_ids`"):
        write_shard(tmp_path, records_to_table([record("a", 0, 3), record("z", 0, 3)], D), ["a"], FP)
    assert not (tmp_path / "shards").exists() or not any((tmp_path / "shards").iterdir())


def test_verify_names_a_json_file_that_is_not_a_sidecar_and_a_shard_it_cannot_read(tmp_path):
    make_harvest(tmp_path)
    (tmp_path / "shards" / "notes.json").write_text("{}")
    garbage = b"not an arrow stream at all"
    (tmp_path / "shards" / "shard-junk.arrow").write_bytes(garbage)
    write_json_atomic(tmp_path / "shards" / "shard-junk.json", {
        "name": "shard-junk.arrow", "rows": 0, "example_ids": ["d"], "states": {"d": 0}, "fingerprint": FP,
        "sha256": hashlib.sha256(garbage).hexdigest(), "bytes": len(garbage)})
    problems = verify_harvest(tmp_path).problems  # a report, not an ArrowInvalid
    assert any("notes.json: foreign file in shards/" in p for p in problems), problems
    assert any("shard-junk.arrow: unreadable Arrow stream" in p for p in problems), problems


def test_verify_reports_a_damaged_shard_without_blaming_the_manifest(tmp_path):
    """The manifest's totals are compared only when every shard was read: a truncated shard is
    not counted, which is not the manifest's fault."""
    make_harvest(tmp_path)
    shard = sorted((tmp_path / "shards").glob("shard-*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[:-8])
    problems = verify_harvest(tmp_path).problems
    assert any("truncated" in p for p in problems)
    assert not any(p.startswith("manifest.json") for p in problems), problems


def test_verify_compares_the_manifest_with_the_shards_present(tmp_path):
    """A listed shard gone with its sidecar, a shard not listed, an entry's bytes and the
    manifest's fingerprint / hidden size are each compared."""
    make_harvest(tmp_path)
    gone = sorted((tmp_path / "shards").glob("shard-*.arrow"))[0]
    gone.unlink()
    gone.with_suffix(".json").unlink()
    problems = verify_harvest(tmp_path).problems
    assert any(f"manifest.json: lists {gone.name}, which is missing" in p for p in problems), problems

    (tmp_path / "m").mkdir()
    out = make_harvest(tmp_path / "m")
    extra = write_shard(out, records_to_table([record("z", 0, 2)], D), ["z"], FP)
    assert any(f"{extra.name}: not in manifest.json" in p for p in verify_harvest(out).problems)

    (tmp_path / "f").mkdir()
    out = make_harvest(tmp_path / "f")
    manifest = json.loads((out / MANIFEST_JSON).read_text())
    manifest["shards"][0]["bytes"] += 1
    manifest.update(fingerprint="other@local:1", hidden_size=D + 1)
    (out / MANIFEST_JSON).write_text(json.dumps(manifest))
    problems = "\n".join(verify_harvest(out).problems)
    name = manifest["shards"][0]["name"]
    assert f"manifest.json: {name} bytes" in problems
    assert "manifest.json: fingerprint 'other@local:1'" in problems
    assert f"manifest.json: hidden_size {D + 1}" in problems


# --- dataset --------------------------------------------------------------------------------------


def test_load_harvest_without_shards_and_harvest_digest(tmp_path):
    write_json_atomic(tmp_path / "harvest.json", {"schema_version": 1, "fingerprint": FP, "hidden_size": D,
                                                  "examples": 0, "config": {}})
    with pytest.raises(HarvestError, match="has no shards"):
        load_harvest(tmp_path, verify=False)
    # the prompts' digest first; the ids' only for a harvest too old to record it
    assert harvest_digest({"items_sha256": "i", "examples_sha256": "e"}) == "i"
    assert harvest_digest({"examples_sha256": "e"}) == "e"


@pytest.mark.parametrize("content, message", [
    (json.dumps({"fingerprint": FP}).encode(), "lacks hidden_size"),
    (json.dumps(["fingerprint", "hidden_size"]).encode(), "lacks fingerprint, hidden_size"),
    (b'\xff\xfe{"fingerprint": 1}', "is unreadable"),
])
def test_harvest_info_names_an_incomplete_or_undecodable_record(tmp_path, content, message):
    (tmp_path / "harvest.json").write_bytes(content)
    with pytest.raises(HarvestError, match=message):
        harvest_info(tmp_path)


# --- harvest.json (prepare_output) and items_digest -----------------------------------------------


def test_prepare_output_refuses_another_model_width_or_examples_and_writes_only_when_asked(tmp_path):
    from depmask.data_gen.harvest import prepare_output

    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"))
    spec = prepare_output(cfg, "m@1", 8, 30, ["a", "b"], write=False)
    assert not (tmp_path / "h" / "harvest.json").exists() and spec["fingerprint"] == "m@1"
    prepare_output(cfg, "m@1", 8, 30, ["a", "b"])
    for args, message in [(("m@2", 8, 30, ["a", "b"]), r"fingerprint: 'm@1' → 'm@2'"),
                          (("m@1", 16, 30, ["a", "b"]), r"hidden_size: 8 → 16"),
                          (("m@1", 8, 30, ["a", "c"]), r"examples_sha256: '[0-9a-f]{64}' → '[0-9a-f]{64}'")]:
        with pytest.raises(ValueError, match=message):
            prepare_output(cfg, *args)


def test_a_harvest_of_another_revision_is_resumed_with_a_warning(tmp_path):
    """Any other recorded revision warns, not only a record without one."""
    from depmask.data_gen.harvest import prepare_output

    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"))
    spec = prepare_output(cfg, "m@1", 8, 30, ["a"])
    _edit_json(tmp_path / "h" / "harvest.json", revision="2026-11-30")
    with pytest.warns(UserWarning, match=r"harvested by depmask revision 2026-11-30, this is"):
        assert prepare_output(cfg, "m@1", 8, 30, ["a"])["fingerprint"] == spec["fingerprint"]


def test_items_digest_follows_every_field_an_example_decodes_with():
    from depmask.data_gen.harvest import items_digest
    from depmask.data_gen.prompts import PromptItem

    base = PromptItem("a", "t", [1, 2], "low_confidence", 8, 8)
    others = [PromptItem("b", "t", [1, 2], "low_confidence", 8, 8), PromptItem("a", "t", [1, 3], "low_confidence", 8, 8),
              PromptItem("a", "t", [1, 2], "threshold", 8, 8), PromptItem("a", "t", [1, 2], "low_confidence", 16, 8),
              PromptItem("a", "t", [1, 2], "low_confidence", 8, 4)]
    assert len({items_digest([it]) for it in [base, *others]}) == 6


# --- harvest_group and the recorder (embedded model) ----------------------------------------------


def test_harvest_group_counts_pairs_and_forwards(embedded):
    """`pairs` is m·(m-1) per state; `probe_forwards` sums every state's probes; `forwards` counts
    the planning decode, the recorded one and its probes (summaries report these)."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=4, states_per_example=3, batch_size=4,
                         chunk_size=4)
    group = groups[0]
    res = harvest_group(embedded, group, cfg, embedded.tokenizer.pad_token_id)
    assert res.pairs == sum(len(r.positions) * (len(r.positions) - 1) for r in res.records) > 0
    plain = generate(embedded, [it.prompt_ids for it in group], build_policy("low_confidence"), gen_length=16,
                     steps=16, pad_id=embedded.tokenizer.pad_token_id)
    assert res.probe_forwards > len({r.step for r in res.records})  # several probe forwards per kept step
    assert res.forwards == 2 * plain.forwards + res.probe_forwards


def test_rows_with_different_masked_counts_record_only_their_own_masked_positions(embedded):
    """`threshold` commits different counts per row: the recorder pads to the widest row, and each
    record must keep its own masked positions only (not the padding slots)."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=8, states_per_example=None,
                         policies=["threshold:threshold=0.7"], batch_size=8)
    res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
    counts = set()
    for r in res.records:
        g = groups[0][0].block_length
        start = r.prompt_length + r.block * g
        masked = start + np.flatnonzero(r.tokens[start:start + g] == embedded.mask_id)
        np.testing.assert_array_equal(r.positions, masked)
        assert r.tv.shape == (len(masked), len(masked)) and r.hidden.shape[0] == len(masked)
        counts.add(len(masked))
    assert len(counts) > 3


def test_a_random_policy_at_temperature_zero_is_seeded(embedded):
    """`random` draws from the generator even at temperature 0: both passes (and a resume) need the
    seeded one, or the recorded states follow the global RNG."""
    cfg, groups = _items(embedded, tasks=["sudoku4"], examples_per_task=4, states_per_example=2,
                         policies=["random"], batch_size=4)
    runs = []
    for seed in range(2):
        torch.manual_seed(seed)
        res = harvest_group(embedded, groups[0], cfg, embedded.tokenizer.pad_token_id)
        runs.append([(r.example_id, r.step, r.tokens.tolist()) for r in res.records])
    assert runs[0] == runs[1] and runs[0]


def test_the_recorder_ignores_forwards_past_its_keep_matrix_and_binds_its_policy(embedded):
    items = _items(embedded, tasks=["sudoku4"], examples_per_task=2, batch_size=2)[1][0]
    prompts = [it.prompt_ids for it in items]
    meta = [{"example_id": it.example_id, "task": it.task, "policy": "low_confidence", "fingerprint": "x",
             "prompt_length": len(it.prompt_ids)} for it in items]
    rec = Recorder(build_policy("low_confidence"), torch.ones(2, 2, dtype=torch.bool), [0, 0], meta, embedded.mask_id)
    generate(embedded, prompts, rec, gen_length=16)  # 16 forwards per row, 2 columns of `keep`
    assert sorted((r.example_id, r.step) for r in rec.records) == sorted((it.example_id, s) for it in items for s in (0, 1))

    bound = []

    class Bindable(type(build_policy("low_confidence"))):
        def bind(self, denoiser):
            bound.append(denoiser)

    Recorder(Bindable(), torch.ones(1, 1, dtype=torch.bool), [0], meta[:1], embedded.mask_id).bind(embedded)
    assert bound == [embedded]
