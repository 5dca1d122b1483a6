"""Resuming a harvest: what is kept, and which changed settings, prompts or shards refuse the resume."""

import json

import pytest

from depmask.data_gen import HarvestConfig
from depmask.data_gen.dataset import load_harvest
from depmask.data_gen.verify import verify_harvest
from depmask.train.harvest import run_harvest
from tests.conftest import EMBEDDED
from tests.data_gen.harvest_inputs import QUIET


def test_run_harvest_resume_and_identity(embedded, tmp_path):
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"], examples_per_task=12,
                        states_per_example=2, batch_size=4)
    first = run_harvest(cfg, QUIET)
    assert first["states"] == 24 and first["total_examples"] == 12 and first["shards"] == 3
    assert verify_harvest(cfg.output).ok
    assert json.loads((tmp_path / "h" / "harvest.json").read_text())["device"] == "cpu"  # the forwards' device
    again = run_harvest(cfg, QUIET)  # nothing left to do
    assert again["skipped_examples"] == 12 and again["states"] == 0 and again["total_rows"] == 24
    ds = load_harvest(cfg.output)
    states = sorted(zip(list(ds["example_id"]), list(ds["step"])))
    assert len(ds) == 24 and len(set(states)) == 24
    del ds  # memory-mapped: the shards are damaged below
    with pytest.raises(ValueError, match=r"config.topk: 1 → 2"):
        run_harvest(HarvestConfig(**{**vars(cfg), "topk": 2}), QUIET)
    # a damaged shard (truncated since) is harvested again on resume; it used to count as done,
    # so `verify` kept failing after the re-run that its message recommends
    shard = sorted((tmp_path / "h" / "shards").glob("shard-*.arrow"))[1]
    shard.write_bytes(shard.read_bytes()[:100])
    assert not verify_harvest(cfg.output).ok
    repaired = run_harvest(cfg, QUIET)
    assert repaired["states"] == 8 and repaired["total_rows"] == 24 and verify_harvest(cfg.output).ok
    again = load_harvest(cfg.output)
    assert sorted(zip(list(again["example_id"]), list(again["step"]))) == states


def test_a_harvest_recorded_before_prompts_chat_is_resumed(tmp_path):
    from depmask.data_gen.harvest import prepare_output

    common = {"model": str(EMBEDDED), "output": str(tmp_path / "h"), "states_per_example": 4,
              "prompts_file": str(tmp_path / "p.jsonl"), "gen_length": 8}
    cfg = HarvestConfig(**common)
    spec = prepare_output(cfg, "m@1", 8, 30, ["a", "b"])
    old = {**spec, "config": {k: v for k, v in spec["config"].items() if k != "prompts_chat"}}
    (tmp_path / "h" / "harvest.json").write_text(json.dumps(old))
    assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"]) == old
    chat = HarvestConfig(**common, prompts_chat=True)
    with pytest.raises(ValueError, match=r"config\.prompts_chat: False → True"):
        prepare_output(chat, "m@1", 8, 30, ["a", "b"])


def test_a_harvest_whose_states_were_chosen_the_old_way_is_not_resumed(tmp_path):
    from depmask.data_gen.harvest import STATE_CHOICE, prepare_output

    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), states_per_example=4)
    spec = prepare_output(cfg, "m@1", 8, 30, ["a", "b"])
    assert spec["state_choice"] == STATE_CHOICE
    assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"]) == spec  # the same harvest: resumed
    old = {k: v for k, v in spec.items() if k != "state_choice"}  # harvest.json from before 2026-11-30
    (tmp_path / "h" / "harvest.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"state_choice: None → \"among the trajectory's forwards\""):
        prepare_output(cfg, "m@1", 8, 30, ["a", "b"])
    every = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), states_per_example=None)
    every_old = {**old, "config": every.identity()}
    (tmp_path / "h" / "harvest.json").write_text(json.dumps(every_old))
    assert prepare_output(every, "m@1", 8, 30, ["a", "b"]) == every_old  # every state kept: nothing chosen


def test_a_resume_with_other_prompts_precision_or_without_task_kwargs_is_refused(tmp_path):
    """Example ids (`task:split:seed:i`, or a prompts file's own) do not change with the prompts
    behind them, so `examples_sha256` let a resume mix two data sets: after editing the prompts
    file, after dropping `task_kwargs` (empty ones are not recorded, and only the new config's keys
    were compared), or under another Lightning precision (bf16 moves the influences)."""
    from depmask.data_gen.harvest import items_digest, prepare_output
    from depmask.data_gen.prompts import PromptItem

    items = [PromptItem("a", "t", [1, 2], "low_confidence", 8, 8), PromptItem("b", "t", [3], "low_confidence", 8, 8)]
    edited = [PromptItem("a", "t", [1, 5], "low_confidence", 8, 8), items[1]]
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"],
                        task_kwargs={"sudoku4": {"test_fraction": 0.5}})
    spec = prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(items), precision="32-true")
    assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(list(reversed(items))),
                          precision="32-true") == spec  # the same examples in another order: resumed
    with pytest.raises(ValueError, match=r"items_sha256: '[0-9a-f]{64}' → '[0-9a-f]{64}'"):
        prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(edited), precision="32-true")
    with pytest.raises(ValueError, match=r"precision: '32-true' → 'bf16-mixed'"):
        prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(items), precision="bf16-mixed")
    plain = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"])
    with pytest.raises(ValueError, match=r"config\.task_kwargs: \{'sudoku4': \{'test_fraction': 0\.5\}\} → \{\}"):
        prepare_output(plain, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(items), precision="32-true")
    before = {k: v for k, v in spec.items() if k not in ("items_sha256", "precision", "revision")}  # before 2026-11-30
    (tmp_path / "h" / "harvest.json").write_text(json.dumps(before))
    with pytest.warns(UserWarning, match=r"harvested by depmask revision before 2026-11-30.*captured attention"):
        assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"], items_sha256=items_digest(edited),
                              precision="bf16-mixed") == before  # nothing recorded to compare with


def test_a_shard_of_another_harvest_under_the_same_name_is_refused_on_resume(tmp_path):
    """Shard names come from example ids: a harvest of the same examples under other settings
    names its shards alike. A copied-in one was taken as done, and the resume's manifest then
    hid it from `verify`."""
    import shutil

    common = dict(model=str(EMBEDDED), tasks=["sudoku4"], examples_per_task=2, states_per_example=1, batch_size=2)
    mine = HarvestConfig(output=str(tmp_path / "a"), **common)
    theirs = HarvestConfig(output=str(tmp_path / "b"), policies=["threshold:threshold=0.7"], **common)
    run_harvest(mine, QUIET)
    run_harvest(theirs, QUIET)
    (shard,) = sorted((tmp_path / "b" / "shards").glob("shard-*"))[:1]
    assert (tmp_path / "a" / "shards" / shard.name).exists()  # the same name
    for p in (tmp_path / "b" / "shards").glob(shard.stem + ".*"):
        shutil.copy(p, tmp_path / "a" / "shards" / p.name)
    with pytest.raises(ValueError, match=rf"holds 1 shard\(s\) written by another harvest .*{shard.stem}"):
        run_harvest(mine, QUIET)
    assert any("written by another harvest" in p for p in verify_harvest(mine.output).problems)


def test_a_resume_on_another_device_is_warned_about_and_continued(tmp_path):
    """The remaining examples' states are drawn from that device's generator: valid data, but not
    the single-device run's; a record without a device (before 2026-12-01) is not judged."""
    import warnings

    from depmask.data_gen.harvest import prepare_output

    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"))
    spec = prepare_output(cfg, "m@1", 8, 30, ["a", "b"], device="cpu")
    assert spec["device"] == "cpu"
    with pytest.warns(UserWarning, match=r"harvest.json: harvested on cpu so far, resumed on cuda"):
        assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"], device="cuda") == spec  # resumed, record kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepare_output(cfg, "m@1", 8, 30, ["a", "b"], device="cpu") == spec
        (tmp_path / "h" / "harvest.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "device"}))
        prepare_output(cfg, "m@1", 8, 30, ["a", "b"], device="cuda")
