"""`depmask eval decode` refuses bad settings, lengths, labels, windows and held-out draws by name,
before the model loads."""

import json

import pytest

from depmask.cli import main
from depmask.eval.draws import check_heldout
from depmask.eval.runner import PolicySweep
from depmask.models import HFDenoiser
from tests.conftest import EMBEDDED
from tests.eval.decode_args import SMALL


def test_sweep_expansion_and_errors():
    runs = PolicySweep("threshold", knobs={"x": 1}, sweep={"threshold": [0.5, 0.9], "y": [1, 2]}).expand()
    assert len(runs) == 4 and {"x": 1, "threshold": 0.5, "y": 2} in runs
    assert PolicySweep("low_confidence").expand() == [{}]
    swept_first = PolicySweep("guided", knobs={"rule": "conflict", "threshold": 0.1}, sweep={"threshold": [0.9]}).expand()
    assert swept_first == [{"threshold": 0.9, "rule": "conflict"}] and list(swept_first[0]) == ["threshold", "rule"]
    with pytest.raises(ValueError, match=r"sweep.threshold"):
        PolicySweep("threshold", sweep={"threshold": []}).expand()


def test_eval_decode_refuses_a_bad_window_before_decoding(tmp_path):
    with pytest.raises(ValueError, match=r"`windows` \(\[0.01, 2.0\]\) has entries outside \[0, 1\]: \[2.0\]"):
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), "--windows", "[0.01, 2]"])
    assert not (tmp_path / "ev").exists()


def test_a_label_may_not_take_another_presets_name():
    assert PolicySweep("guided", label="head-conflict").shown == "head-conflict"
    assert PolicySweep("demask", label="demask").shown == "demask"
    with pytest.raises(ValueError, match=r"`label` \('demask'\) must be a non-empty name that is not another preset's"):
        PolicySweep("guided", label="demask")
    with pytest.raises(ValueError, match="`label`"):
        PolicySweep("guided", label="")
    # the headline finds the reference, the oracle and today's decoders by their preset's name: a
    # labelled `threshold` sweep took no part in the best baseline (and was given a headroom share)
    for name in ("low_confidence", "oracle", "threshold", "entropy_bound", "dilated"):
        with pytest.raises(ValueError, match=rf"policy '{name}': `label` \('x'\) is not allowed"):
            PolicySweep(name, label="x")
    assert PolicySweep("threshold", label="threshold").shown == "threshold"


def test_held_out_draw_is_checked_before_the_model_loads(tmp_path, monkeypatch):
    """`--n null --select_n N` on a benchmark: every held-out item is an evaluation item; this was
    found only after the whole evaluation had decoded."""
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(6)))
    kwargs = {"gsm8k": {"path": str(data), "shots": 0}}
    monkeypatch.setattr(HFDenoiser, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(ValueError, match=r"`select_n` \(2\) needs `n`"):
        main(["eval", "decode", "--tasks", "[gsm8k]", "--task_kwargs", json.dumps(kwargs), "--n", "null",
              "--select_n", "2", "--output", str(tmp_path / "o")])
    with pytest.raises(ValueError, match=r"task 'gsm8k': every item of the draw \(split 'test', seed 1\) is an excluded"):
        main(["eval", "decode", "--tasks", "[gsm8k]", "--task_kwargs", json.dumps(kwargs), "--n", "6",
              "--select_n", "2", "--output", str(tmp_path / "o")])
    check_heldout(["gsm8k"], "test", 4, 0, 6, 1, kwargs)  # 2 items left over: fine


@pytest.mark.parametrize("args,message", [
    (["--select_n", "-1"], r"`select_n` \(-1\) must be an int >= 0"),
    (["--select_n", "5", "--select_seed", "0"], r"`select_seed` \(0\) must differ from `seed` \(0\)"),
    (["--select_n", "5", "--policies", "[{name: threshold}]"], r"`select_n` needs `low_confidence`"),
    (["--n", "0"], r"`n` \(0\) must be an int >= 1 \(items per task\)"),
    (["--batch_size", "0"], r"`batch_size` \(0\) must be an int >= 1"),
    (["--policies", "[{name: low_confidence}, {name: threshold, sweep: {threshold: [0.5, 1.5]}}]"],
     r"policy sweep 'threshold', run \{'threshold': 1.5\}: `threshold` \(1.5\) must lie in \(0, 1\]"),
    (["--policies", "[{name: entropy_bound, sweep: {tau: [0.5]}}]"],
     r"policy sweep 'entropy_bound', run \{'tau': 0.5\}: policy 'entropy_bound' has no knob 'tau'; its knobs: gamma"),
    # an empty list, or a length of 0, is not "unset": they used to run the defaults
    (["--policies", "[{name: guided, knobs: {scorer: attention}, sweep: {epsilon: [0.1, 0.2]}}, "
      "{name: guided, label: g2, knobs: {scorer: attention}, sweep: {epsilon: [0.2]}}]"],
     r"policy sweep 'g2', run \{'epsilon': 0.2, 'scorer': 'attention'\}: the same run as one of sweep 'guided' \(same preset and knobs"),
    # the reference, the oracle and the baselines are found by name: a label hid them from the headline
    (["--policies", "[{name: low_confidence, label: one-per-step}]"], r"`label` \('one-per-step'\) is not allowed on the reference"),
    (["--tasks", "[]"], r"`tasks` is empty"),
    (["--policies", "[]"], r"`policies` is empty"),
    (["--gen_length", "0"], r"`gen_length` \(0\) must be an int >= 1, or None"),
    (["--steps", "0"], r"`steps` \(0\) must be an int >= 1, or None"),
    (["--temperature", "-0.5"], r"`temperature` \(-0.5\) must be a finite number >= 0"),
    # a length that does not fit a task fails before the first run writes anything
    (["--block_length", "3"], r"task 'sort': `block_length` \(3\) must be >= 1 and divide `gen_length` \(8\)"),
    # task names and their arguments, before the model loads (a misspelled name was ignored)
    (["--task_kwargs", "{sorting: {n: 8}}"], r"`task_kwargs` names \['sorting'\], which are not in `tasks`"),
    (["--tasks", "[sort, nosuch]"], r"unknown task 'nosuch'"),
    # these failed only after every run had decoded (the bootstrap), or after the model loaded
    (["--seed", "-1"], r"`seed` \(-1\) must be an int in \[0, 2\*\*32 - 1\]"),
    (["--select_n", "2", "--select_seed", "-3"], r"`select_seed` \(-3\) must be an int"),
    (["--tasks", "[sort, sort]"], r"names \['sort'\] more than once"),
    (["--split", "validation"], r"`split` \('validation'\) must be one of train, test"),
])
def test_eval_decode_refuses_bad_settings_before_decoding(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), *args])
    assert not (tmp_path / "ev").exists()
    with pytest.raises(ValueError, match=message):  # before the model loads: a missing one is not the error
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), *args, "--model.path", str(tmp_path / "none")])


def test_a_benchmark_without_its_data_is_named_before_the_model_loads(tmp_path):
    """`configs/eval/gsm8k-llada.yaml`'s first-run error came after LLaDA-8B had loaded."""
    from depmask.tasks.benchmarks import DataNotFoundError

    with pytest.raises(DataNotFoundError, match=r"no 'gsm8k' data for split 'test'"):
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), "--tasks", "[gsm8k]", "--n", "2",
              "--task_kwargs", "{gsm8k: {path: /nonexistent/gsm8k.jsonl}}", "--model.path", str(tmp_path / "none")])


def test_a_benchmark_length_given_twice_must_agree_before_the_model_loads(tmp_path):
    """The shipped real-model configs set `gen_length: 256` for every task, so `--task_kwargs
    "{gsm8k: {gen_length: 16}}"` was dropped silently (and recorded among the task's arguments)."""
    data = tmp_path / "gsm8k.jsonl"
    data.write_text('{"question": "1 + 1?", "answer": "2\\n#### 2"}\n')
    base = ["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), "--tasks", "[gsm8k]", "--n", "1",
            "--model.path", str(tmp_path / "none")]
    with pytest.raises(ValueError, match=r"task 'gsm8k': `gen_length` is 16 in its `task_kwargs` but 256 for every "
                                         r"task \(`gen_length`\)"):
        main([*base, "--gen_length", "256", "--task_kwargs",
              f"{{gsm8k: {{path: {data}, gen_length: 16, block_length: 8}}}}"])
    with pytest.raises(ValueError, match=r"`block_length` is 8 in its `task_kwargs` but 32"):
        main([*base, "--block_length", "32", "--task_kwargs", f"{{gsm8k: {{path: {data}, block_length: 8}}}}"])


def test_mbpps_few_shot_split_is_named_before_the_model_loads(tmp_path):
    """3-shot MBPP prompts read the `prompt` split, which a folder holding only the test problems lacks."""
    from depmask.tasks.benchmarks import DataNotFoundError

    data = tmp_path / "mbpp"
    data.mkdir()
    rows = [{"task_id": t, "text": f"Return {t}.", "code": f"def f():\n    return {t}",
             "test_list": [f"assert f() == {t}"], "test_setup_code": "", "challenge_test_list": []} for t in (11, 12)]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataNotFoundError, match=r"prompt"):
        main(["eval", "decode", *SMALL, "--output", str(tmp_path / "ev"), "--tasks", "[mbpp]", "--n", "2",
              "--task_kwargs", f"{{mbpp: {{path: {data}}}}}", "--model.path", str(tmp_path / "none")])


def test_task_accuracy_names_bad_arguments_and_takes_a_task_name():
    from depmask.decoding import build_policy
    from depmask.eval.task_accuracy import score_task
    from depmask.models import HFDenoiser

    den = HFDenoiser.from_pretrained(EMBEDDED)
    for kwargs, message in (({"n": 0}, r"`n` \(0\) must be an int >= 1"),
                            ({"n": 2, "batch_size": 0}, r"`batch_size` \(0\) must be an int >= 1")):
        with pytest.raises(ValueError, match=message):
            score_task(den, den.tokenizer, "sort", build_policy("low_confidence"), **kwargs)
    row = score_task(den, den.tokenizer, "sort", build_policy("low_confidence"), n=2)
    assert row["n"] == 2 and 0 <= row["accuracy"] <= 1
