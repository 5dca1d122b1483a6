"""The harvest names bad settings, prompts, lengths and policies, before the model loads where it can."""

import json

import pytest

from depmask.data_gen import HarvestConfig, build_items
from depmask.train.harvest import run_harvest
from tests.conftest import EMBEDDED
from tests.data_gen.harvest_inputs import QUIET


def test_bad_config_values_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"`topk` \(0\)"):
        HarvestConfig(topk=0)
    with pytest.raises(ValueError, match="gen_length"):
        HarvestConfig(prompts_file="x.jsonl")
    # 0 is not "unset": it used to fall back to the task's answer length
    with pytest.raises(ValueError, match=r"`gen_length` \(0\) must be >= 1 or None"):
        HarvestConfig(gen_length=0)
    with pytest.raises(ValueError, match=r"`block_length` \(0\) must be >= 1 or None"):
        HarvestConfig(block_length=0)
    with pytest.raises(ValueError, match=r"`num_workers` \(-1\) must be >= 0"):
        HarvestConfig(num_workers=-1)
    with pytest.raises(FileNotFoundError, match="prompts_file"):
        build_items(HarvestConfig(prompts_file=str(tmp_path / "none.jsonl"), gen_length=4), None)
    # a policy spec with a typo fails when the config is made, not after the groups before it
    with pytest.raises(ValueError, match=r"`policies` entry 'threshold:tau=0.9': policy 'threshold' has no knob 'tau'"):
        HarvestConfig(policies=["low_confidence", "threshold:tau=0.9"])
    with pytest.raises(ValueError, match=r"`policies` entry 'nosuch': unknown policy 'nosuch'"):
        HarvestConfig(policies=["nosuch"])
    with pytest.raises(FileNotFoundError, match=r"`policies` entry 'demask:head=/nope': head checkpoint directory"):
        HarvestConfig(policies=["demask:head=/nope"])


def test_task_names_and_task_kwargs_are_checked(embedded, tmp_path):
    with pytest.raises(ValueError, match=r"`task_kwargs` names \['gsm8k'\], which are not in `tasks`"):
        HarvestConfig(tasks=["sudoku4"], task_kwargs={"gsm8k": {}})
    with pytest.raises(ValueError, match=r"`task_kwargs` .* must map task names to dicts"):
        HarvestConfig(tasks=["gsm8k"], task_kwargs={"gsm8k": 3})
    with pytest.raises(ValueError, match=r"unknown task 'sudoku9'; expected one of .*'sudoku4'.*'gsm8k'"):
        build_items(HarvestConfig(tasks=["sudoku9"]), embedded.tokenizer)
    # harvests made before `task_kwargs` existed keep their identity (and so still resume)
    assert "task_kwargs" not in HarvestConfig().identity()
    assert HarvestConfig(tasks=["gsm8k"], task_kwargs={"gsm8k": {"shots": 0}}).identity()["task_kwargs"] == {
        "gsm8k": {"shots": 0}}


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "validation"}, r"`split` \('validation'\) must be one of train, test"),
    ({"tasks": ["sudoku4", "sudoku4"]}, r"names \['sudoku4'\] more than once"),
    ({"prompts_file": "/nonexistent/prompts.jsonl", "gen_length": 8}, r"`prompts_file` \('/nonexistent/prompts.jsonl'\) does not exist"),
])
def test_the_harvest_refuses_its_inputs_before_the_model_loads(tmp_path, kwargs, message):
    cfg = HarvestConfig(**{"model": str(tmp_path / "no-model"), "output": str(tmp_path / "h"), "tasks": ["sudoku4"],
                           "examples_per_task": 2, **kwargs})
    with pytest.raises(ValueError, match=message):  # the model does not exist: the refusal comes first
        run_harvest(cfg, {"accelerator": "cpu"})


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ["sudoku4"], "block_length": 5}, r"`block_length` \(5\) must be >= 1 and divide `gen_length` \(16\)"),
    ({"tasks": ["sudoku4"], "gen_length": 16, "block_length": 32}, r"`block_length` \(32\) .* `gen_length` \(16\)"),
    ({"prompts_file": "PROMPTS", "gen_length": 12, "block_length": 8}, r"`block_length` \(8\) .* `gen_length` \(12\)"),
])
def test_lengths_are_checked_before_the_model_loads(tmp_path, monkeypatch, kwargs, message):
    import depmask.train.harvest as harvest_module

    def no_load(*args, **kw):
        raise AssertionError("the model loaded before the lengths were checked")

    monkeypatch.setattr(harvest_module.HFDenoiser, "from_pretrained", no_load)
    if kwargs.get("prompts_file") == "PROMPTS":
        (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "3 1"}) + "\n")
        kwargs = {**kwargs, "prompts_file": str(tmp_path / "p.jsonl")}
    with pytest.raises(ValueError, match=message):
        run_harvest(HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), **kwargs), QUIET)


def test_prompts_chat_without_a_template_is_named_before_the_model_loads(tmp_path, monkeypatch):
    import depmask.train.harvest as harvest_module

    def no_load(*args, **kw):
        raise AssertionError("the model loaded first")

    monkeypatch.setattr(harvest_module.HFDenoiser, "from_pretrained", no_load)
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "3 1"}) + "\n")
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), prompts_file=str(tmp_path / "p.jsonl"),
                        gen_length=8, prompts_chat=True)
    with pytest.raises(ValueError, match=r"`prompts_chat` is true but the model's tokenizer has no chat template"):
        run_harvest(cfg, QUIET)


@pytest.mark.parametrize("content, message", [
    ('{"id": "a", "prompt": "x"}\n\n{"id": "b"}\n', r"line 3: `prompt` must be a non-empty string, got None \(fields: \['id'\]\)"),
    ('{"prompt": 5}\n', r"line 1: `prompt` must be a non-empty string, got 5"),
    ('[{"prompt": "x"}]\n', r"line 1 is a list, not an object with a `prompt`"),
    ('"just text"\n', r"line 1 is a str, not an object"),
    ('{"id": 1, "prompt": "x"}\n\n\n{"id": "1", "prompt": "y"}\n', r"line 1 and line 4 have the same id"),
    (b'{"prompt": "caf\xe9"}\n', r"is not UTF-8 text"),
    ("\n\n", r"holds no prompts"),
    ("not json\n", r"line 1 is not JSON"),
])
def test_a_prompts_file_is_checked_row_by_row_before_the_model_loads(tmp_path, monkeypatch, content, message):
    """Only row 0 was looked at, after the model had loaded: a later row's missing `prompt` was a
    raw KeyError, a number the tokenizer's error, an empty file a harvest of nothing."""
    from depmask.models import HFDenoiser

    path = tmp_path / "p.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.setattr(HFDenoiser, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), prompts_file=str(path), gen_length=8)
    with pytest.raises(ValueError, match=message):
        run_harvest(cfg, QUIET)


def test_policy_specs_name_a_repeated_knob_or_entry_and_chat_needs_a_prompts_file():
    with pytest.raises(ValueError, match=r"gives knob 'threshold' twice"):
        HarvestConfig(model="m", output="o", policies=["threshold:threshold=0.9,threshold=0.5"])
    with pytest.raises(ValueError, match=r"entries 'low_confidence' and 'low_confidence' are the same policy"):
        HarvestConfig(model="m", output="o", policies=["low_confidence", "threshold", "low_confidence"])
    # the policy, not its spelling: a knob at its default, a class name (each doubled its share)
    with pytest.raises(ValueError, match=r"entries 'threshold' and 'threshold:threshold=0.9' are the same policy"):
        HarvestConfig(model="m", output="o", policies=["threshold", "threshold:threshold=0.9"])
    with pytest.raises(ValueError, match=r"entries 'low_confidence' and 'LowConfidence' are the same policy"):
        HarvestConfig(model="m", output="o", policies=["low_confidence", "LowConfidence"])
    HarvestConfig(model="m", output="o", policies=["threshold", "threshold:threshold=0.8"])  # two policies
    with pytest.raises(ValueError, match=r"`prompts_chat` applies to a `prompts_file`'s texts"):
        HarvestConfig(model="m", output="o", prompts_chat=True)


def test_topk_beyond_the_vocabulary_is_refused_before_any_work(embedded, tmp_path):
    """`top_values` took min(k, vocab): a harvest asked for more values than the model has recorded
    the number asked for, with the expectation over fewer."""
    v = embedded.vocab_size
    cfg = HarvestConfig(model=str(EMBEDDED), output=str(tmp_path / "h"), tasks=["sudoku4"], examples_per_task=2,
                        states_per_example=1, batch_size=2, topk=v)
    with pytest.raises(ValueError, match=rf"`topk` \({v}\) must be at most {v - 1}"):
        run_harvest(cfg, QUIET)
    assert not (tmp_path / "h").exists()
