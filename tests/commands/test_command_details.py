"""What the small commands (`tasks show`, `decode`, `eval subadditivity`, `harvest verify`,
`mdlm evaluate`) and the harvest's config and prompt plans check, print and write: the details
no end-to-end test looks at (a dropped flag, a bound moved by one, a default, a summary field)."""

import json
import math

import pytest

from depmask.cli import main
from depmask.models import HFDenoiser
from tests.conftest import EMBEDDED

SORT, PERM = "<sort> 8 1 3 3 9 5 7 2", "<permutation> c f h f g h"


@pytest.fixture(scope="module")
def embedded():
    return HFDenoiser.from_pretrained(EMBEDDED)


class Loaded(Exception):
    """Raised in place of loading the model: every check before the load passed."""


@pytest.fixture
def no_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(HFDenoiser, "from_pretrained", refuse)


# --- tasks show ---------------------------------------------------------------------------------

def test_tasks_show_prints_n_test_examples_of_the_seed_given(capsys):
    """Every one of the `n` examples is printed, from the test split by default, at the seed asked."""
    from depmask.commands.tasks import tasks_show

    tasks_show("sort", n=2)
    out = capsys.readouterr().out
    assert "[sort:test:0:0]" in out and "[sort:test:0:1]" in out and "train" not in out
    tasks_show("sort", n=1, seed=3)
    assert "[sort:test:3:0]" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"`n` \(True\) must be an int >= 1"):  # a flag is no count
        tasks_show("sort", n=True)


# --- decode -------------------------------------------------------------------------------------

def test_decode_passes_every_decoding_setting_to_the_loop(monkeypatch):
    """The seed, temperature and EOS options reach `generate`, not only the argument checks."""
    import depmask.commands.decode as decode_command
    from depmask.decoding import build_policy

    seen = {}
    real = decode_command.generate

    def spy(*args, **kwargs):
        seen.update(kwargs, seed=kwargs["generator"].initial_seed())
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_command, "generate", spy)
    decode_command.decode(str(EMBEDDED), prompt=SORT, gen_length=8, block_length=4, steps=4, temperature=0.5,
                          seed=7, logits_eos_inf=True, confidence_eos_eot_inf=True, stop_at_eos=True,
                          policy=build_policy("threshold", threshold=0.9), json_output=True)
    assert seen["seed"] == 7 and seen["temperature"] == 0.5
    assert (seen["block_length"], seen["steps"]) == (4, 4)
    assert seen["logits_eos_inf"] and seen["confidence_eos_eot_inf"] and seen["stop_at_eos"]


def test_decode_rows_are_each_prompts_own_and_the_summary_names_the_knobs(capsys):
    """Row i carries prompt i and its own NFE / TPF; the JSON names the policy's knobs."""
    main(["decode", "--model", str(EMBEDDED), "--prompt", f"[{SORT}, {PERM}]", "--gen_length", "8",
          "--policy", "threshold", "--policy.threshold", "0.9", "--json_output", "true"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["threshold"] == 0.9
    assert [r["prompt"] for r in out["rows"]] == [SORT, PERM]
    assert out["rows"][0]["nfe"] != out["rows"][1]["nfe"]  # the two rows take different forwards
    for r in out["rows"]:
        assert r["tpf"] == pytest.approx(8 / r["nfe"])
    # the text form: each row's own TPF, and no trajectory unless `--show_steps`
    main(["decode", "--model", str(EMBEDDED), "--prompt", f"[{SORT}, {PERM}]", "--gen_length", "8",
          "--policy", "threshold", "--policy.threshold", "0.9"])
    text = capsys.readouterr().out
    for r in out["rows"]:
        assert f"NFE {r['nfe']}  TPF {8 / r['nfe']:.2f}" in text
    assert not any(line.strip().startswith("forward") for line in text.splitlines())


def test_decode_warns_about_a_single_unknown_word_even_the_first():
    with pytest.warns(UserWarning, match=r"prompt 0 \('hello <sort> 1 2'\): 1 of 4 tokens are unknown"):
        main(["decode", "--model", str(EMBEDDED), "--gen_length", "8", "--json_output", "true",
              "--prompt", "hello <sort> 1 2"])


def test_decode_refuses_both_prompt_texts_and_ids():
    with pytest.raises(ValueError, match=r"give exactly one of `prompt` \(texts\) or `prompt_ids`"):
        main(["decode", "--model", "/nonexistent", "--prompt", "1 2", "--prompt_ids", "[[1, 2]]"])


# --- eval subadditivity ---------------------------------------------------------------------------

SUB = ["eval", "subadditivity", "--model", "/nonexistent", "--tasks", "[sort]", "--n", "2"]


@pytest.mark.parametrize("args", [["--exact_max_set", "0"], ["--max_enumeration", "0"], ["--delta", "0.5"]])
def test_subadditivity_accepts_its_documented_least_values(tmp_path, no_load, args):
    """`exact_max_set` 0 (never exact) and `max_enumeration` 0 (always sampled) are settings."""
    with pytest.raises(Loaded):
        main([*SUB, "--output", str(tmp_path / "sub"), *args])


@pytest.mark.parametrize(("args", "message"), [
    (["--exact_max_set", "-1"], r"`exact_max_set` \(-1\) must be an int >= 0"),
    (["--max_enumeration", "-1"], r"`max_enumeration` \(-1\) must be an int >= 0"),
    (["--delta", "0"], r"`delta` \(0\.0\) must lie in \(0, 1\)"),
    (["--split", "validation"], r"`split` \('validation'\) must be one of"),
])
def test_subadditivity_refuses_bounds_and_splits_before_the_load(tmp_path, no_load, args, message):
    with pytest.raises(ValueError, match=message):
        main([*SUB, "--output", str(tmp_path / "sub"), *args])


def _state(ratio, size=2, tv=0.1, bound=0.2, tv_lo=0.1):
    return {"ratio": ratio, "set_size": size, "tv": tv, "bound": bound, "bound_topk": bound, "bound_chain": bound,
            "holds": tv <= bound, "holds_topk": True, "holds_chain": True, "tv_lo": tv_lo, "tv_err": 0.0,
            "method": "exact"}


def test_subadditivity_summary_row_label_and_table():
    from depmask.commands.eval_subadditivity import _label, _mean, _plain, _summarize, table

    assert _plain({"head": "/h", "epsilon": 1.0, "units": "token", "w": [1]}) == {"epsilon": 1.0, "units": "token"}
    assert _label("demask", {"epsilon": 1.0, "units": "token"}) == "demask(epsilon=1,units=token)"
    assert math.isnan(_mean([])) and _mean([None, 1, 3]) == 2
    # a state whose TV interval's low end equals the bound holds within the error
    states = [_state(1.0), _state(2.0, size=3), _state(9.0, tv=0.3, tv_lo=0.2)]
    row = _summarize("sort", "threshold", {"threshold": 0.5}, states, sizes=[2, 3, 2, 1, 1], accuracy=0.5)
    assert (row["steps"], row["states"], row["set_size_max"]) == (5, 3, 3)
    assert row["ratio_median"] == 2.0 and row["ratio"] == 4.0 and row["holds_within_err"] == 1.0
    empty = _summarize("sort", "threshold", {}, [], sizes=[1], accuracy=1.0)
    assert empty["set_size_max"] == 0 and math.isnan(empty["tv"])
    assert " 50.0 " in table([row]).splitlines()[2]  # accuracy in percent


def test_a_subadditivity_run_at_another_seed_is_measured_again(tmp_path, monkeypatch):
    """Another seed draws other items: its runs are not served the kept runs of the first seed."""
    import depmask.eval.subadditivity as sub
    from depmask.commands.eval_subadditivity import _read_run

    args = ["eval", "subadditivity", "--model", str(EMBEDDED), "--tasks", "[sort]", "--n", "2", "--samples", "8",
            "--output", str(tmp_path / "sub"), "--policies", "[{name: threshold, knobs: {threshold: 0.5}}]"]
    main(args)
    built = []
    real = sub.SetProbe
    monkeypatch.setattr(sub, "SetProbe", lambda *a, **k: built.append(1) or real(*a, **k))
    main(args)
    assert built == []  # the same command: kept
    main([*args, "--seed", "1"])
    assert built == [1]
    (kept,) = (tmp_path / "sub" / "runs").glob("*.json")
    identity = json.loads(kept.read_text())["identity"]
    assert _read_run(kept, identity) is not None and _read_run(kept, {**identity, "n": 3}) is None


# --- harvest verify -------------------------------------------------------------------------------

def test_harvest_verify_prints_the_report_and_exits_1_on_a_problem(tmp_path, capsys):
    from depmask.commands.harvest_verify import harvest_verify

    with pytest.raises(SystemExit) as exc:
        harvest_verify(str(tmp_path))
    assert exc.value.code == 1 and "harvest.json: missing" in capsys.readouterr().out


# --- mdlm evaluate --------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--n", "0"], r"`n` \(0\) must be >= 1"),
    (["--tasks", "[gsm8k]"], r"`tasks` names 'gsm8k', a benchmark"),
])
def test_mdlm_evaluate_refuses_before_the_load(no_load, args, message):
    with pytest.raises(ValueError, match=message):
        main(["mdlm", "evaluate", "--model", "/nonexistent", "--write_card", "false", "--out", "/tmp/x.json", *args])


def test_mdlm_evaluate_all_at_once_is_one_forward(embedded):
    from depmask.commands.mdlm_evaluate import evaluate_rows, format_table

    rows = {r["setting"]: r for r in evaluate_rows(embedded, embedded.tokenizer, ["sort"], 2, 0, 2)}
    assert (rows["all_at_once"]["steps"], rows["all_at_once"]["nfe"]) == (1, 1)
    assert rows["one_per_step"]["steps"] == 8
    table = format_table([{"task": "sort", "setting": "x", "accuracy": 0.5, "nfe": 2, "tpf": 4, "seconds": 1}])
    assert "50.0%" in table


def _table(model, rows):
    model.mkdir(exist_ok=True)
    (model / "eval.json").write_text(json.dumps(rows))


def test_the_model_record_check_accepts_the_same_table_and_foreign_files(tmp_path):
    """Rows before seeds were recorded were at seed 0; tasks keep their order; a file that is not
    a table of ours is nothing to protect."""
    from depmask.commands.mdlm_evaluate import _check_model_record

    model = tmp_path / "m"
    _table(model, [{"task": "sort", "n": 4}, {"task": "addition", "n": 4}])
    _check_model_record(model, 4, ["sort", "addition"], seed=0)
    with pytest.raises(ValueError, match="would replace"):
        _check_model_record(model, 4, ["sort", "addition"], seed=1)
    _table(model, [{"foo": 1}])
    _check_model_record(model, 4, ["sort"], seed=0)


def test_the_model_card_names_tasks_only_when_not_the_default_and_its_training(embedded, tmp_path):
    from depmask.commands.mdlm_evaluate import _trained_tasks, model_card

    assert "--n 500 --seed 0` (torch" in model_card(embedded, "T", "m", 500, 0, "cpu").replace("\n", " ")
    model = tmp_path / "fit"
    model.mkdir()
    (model / "train_config.yaml").write_text("data:\n  tasks: [sort]\n")
    card = model_card(embedded, "T", str(model), 4, 0, "cpu")
    assert "on 1 synthetic task with exact verifiers:\n`sort`." in card
    (model / "train_config.yaml").write_text("data:\n  tasks: [sudoku4, permutation, sort, addition]\n")
    assert "on four synthetic tasks with exact verifiers:\n`sudoku4`," in model_card(embedded, "T", str(model), 4, 0,
                                                                                      "cpu")
    (model / "train_config.yaml").write_text("data:\n  tasks: []\n")
    assert _trained_tasks(model) is None


def test_mdlm_evaluate_keeps_the_training_notes_under_the_card(tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(EMBEDDED, model)
    (model / "eval.json").unlink()
    notes = (model / "TRAINING.md").read_text()
    main(["mdlm", "evaluate", "--model", str(model), "--n", "2", "--tasks", "[sort]"])
    assert (model / "README.md").read_text().endswith("\n" + notes)


# --- harvest config and plans ---------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "name"), [
    ({"examples_per_task": 0}, "examples_per_task"), ({"memory_budget_mb": 0}, "memory_budget_mb"),
    ({"states_per_example": 0}, "states_per_example"), ({"chunk_size": 0}, "chunk_size"),
    ({"batch_size": 0}, "batch_size"), ({"policies": []}, "policies"), ({"tasks": []}, "tasks"),
    ({"temperature": -0.5}, "temperature"),
])
def test_harvest_config_bounds_are_named(kwargs, name):
    from depmask.data_gen import HarvestConfig

    with pytest.raises(ValueError, match=rf"`{name}` \("):
        HarvestConfig(model="m", output="o", **kwargs)


def test_task_kwargs_of_tasks_a_prompts_file_replaces_are_not_refused():
    """With a `prompts_file` the `tasks` are unused: `task_kwargs` naming others is not an error."""
    from depmask.data_gen import HarvestConfig

    HarvestConfig(model="m", output="o", prompts_file="p.jsonl", gen_length=8, tasks=[], task_kwargs={"gsm8k": {}})


def test_every_identity_field_is_in_the_identity_and_speed_fields_are_not():
    from depmask.data_gen import HarvestConfig

    base = HarvestConfig(model="m", output="o").identity()
    changed = {"examples_per_task": 5, "temperature": 0.5, "capture_layers": [1], "topk": 2, "seed": 3,
               "split": "test", "batch_size": 4, "gen_length": 32, "dtype": "float32", "states_per_example": 2}
    for key, value in changed.items():
        assert HarvestConfig(model="m", output="o", **{key: value}).identity()[key] == value != base[key], key
    fast = HarvestConfig(model="m", output="o2", chunk_size=3, memory_budget_mb=7, num_workers=2).identity()
    assert fast == base


def test_policy_specs_take_spaces_and_blank_parts():
    from depmask.data_gen.prompts import parse_policy

    assert parse_policy(" threshold : threshold=0.7,") == ("threshold", {"threshold": 0.7})
    assert parse_policy("threshold:threshold=0.7, ") == ("threshold", {"threshold": 0.7})
    assert parse_policy("factor:factor=1.0, ,temperature=0") == ("factor", {"factor": 1.0, "temperature": 0})


def test_build_items_ids_splits_and_policy_mix(embedded, tmp_path):
    from depmask.data_gen import HarvestConfig, build_items

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("3 1", "2 2")))
    items = build_items(HarvestConfig(model="m", output="o", prompts_file=str(path), gen_length=8), embedded.tokenizer)
    assert [it.example_id for it in items] == ["p:0", "p:1"]
    cfg = dict(model="m", output="o", tasks=["sort"], examples_per_task=12)
    assert all(":test:" in it.example_id for it in build_items(HarvestConfig(**cfg, split="test"), embedded.tokenizer))
    mix = [it.policy for it in build_items(HarvestConfig(**cfg, policies=["low_confidence", "threshold"]),
                                           embedded.tokenizer)]
    assert set(mix) == {"low_confidence", "threshold"}  # the examples are spread over the entries
    with pytest.raises(ValueError, match=r"example id 'sort:train:0:0' appears twice"):
        build_items(HarvestConfig(**{**cfg, "tasks": ["sort", "sort"]}), embedded.tokenizer)


def test_choose_steps_and_groups():
    from depmask.data_gen import PromptItem, group_items
    from depmask.data_gen.prompts import choose_steps

    picks = {choose_steps(0, f"x{i}", 20, 4)[0] for i in range(8)}
    assert len(picks) > 1  # each example its own steps
    for i in range(8):
        steps = choose_steps(0, f"x{i}", 20, 4)
        assert steps == sorted(steps) and len(set(steps)) == 4
    assert choose_steps(0, "x", 3, 5) == [0, 1, 2]
    items = [PromptItem(f"e{i}", "sort", [1], pol, 8, 8) for i, pol in enumerate(["a", "b", "a", "b", "a"])]
    groups = group_items(items, 2)
    assert [[it.example_id for it in g] for g in groups] == [["e0", "e2"], ["e4"], ["e1", "e3"]]
