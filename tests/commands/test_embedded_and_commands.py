"""The shipped embedded model and the commands the README shows: quickstart, decode, tasks show,
mdlm evaluate. These run the real shipped checkpoint on CPU."""

import json

import pytest

from depmask.cli import main
from depmask.commands.mdlm_evaluate import evaluate_rows
from depmask.models import HFDenoiser
from tests.conftest import EMBEDDED, ROOT


@pytest.fixture(scope="module")
def embedded():
    return HFDenoiser.from_pretrained(EMBEDDED)


@pytest.mark.slow
def test_shipped_model_quality_and_the_parallel_gap(embedded):
    """One token per step solves every task; everything in one forward breaks the two tasks with
    many valid answers (the gap dependency-aware decoding exists to close)."""
    rows = evaluate_rows(embedded, embedded.tokenizer, ["sudoku4", "permutation", "sort", "addition"],
                         n=100, seed=1, batch_size=100)
    acc = {(r["task"], r["setting"]): r["accuracy"] for r in rows}
    for task in ("sudoku4", "permutation", "sort", "addition"):
        assert acc[(task, "one_per_step")] >= 0.97, (task, acc[(task, "one_per_step")])
    for task in ("sudoku4", "permutation"):
        assert acc[(task, "all_at_once")] <= acc[(task, "one_per_step")] - 0.3, (task, acc)


@pytest.mark.slow
def test_quickstart_runs_the_whole_pipeline(tmp_path, capsys):
    args = ["quickstart", "--out_dir", str(tmp_path), "--harvest_examples", "12", "--states_per_example", "2",
            "--head_epochs", "1", "--n", "8"]
    main(args)
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert {r["policy"] for r in rows} == {"low_confidence", "threshold", "entropy_bound", "factor", "dilated",
                                           "clad", "demask", "oracle"}
    assert {r["task"] for r in rows} == {"sudoku4", "permutation"}
    for r in rows:
        assert {"task", "policy", "accuracy", "nfe", "tpf", "afp", "n"} <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["nfe"] >= 1 and r["n"] == 8
    assert any(r["policy"] == "oracle" and r["probe_nfe"] > 0 for r in rows)
    assert {r.get("threshold") for r in rows if r["policy"] == "threshold"} == {0.5, 0.7, 0.9, 0.99}
    assert (tmp_path / "frontier.png").stat().st_size > 1000
    assert (tmp_path / "head" / "model.safetensors").is_file() and (tmp_path / "harvest" / "manifest.json").is_file()
    head = json.loads((tmp_path / "head" / "config.json").read_text())
    shipped = json.loads((ROOT / "models" / "tiny-tasks-head" / "config.json").read_text())
    for key in ("dim", "layers", "pair_mlp", "pair_product", "pair_activation"):
        assert head[key] == shipped[key], key  # the quickstart trains the shipped head's recipe
    top = json.loads((tmp_path / "headline.json").read_text())
    assert {(r["task"], r["policy"]) for r in top} >= {("sudoku4", "demask"), ("permutation", "oracle")}
    assert {r["measure"] for r in top} == {"tpf", "tpf_pooled"}
    printed = capsys.readouterr().out
    assert "TPF at the accuracy of one-token-per-step" in printed
    # every stage's output is reused: a second run decodes nothing new and trains nothing
    def stamps():  # the harvest's shards, the head's weights and every results file, untouched
        files = [*(tmp_path / "harvest").rglob("*"), *(tmp_path / "head").rglob("*"), *tmp_path.rglob("*.jsonl")]
        return {str(f): f.stat().st_mtime_ns for f in files if f.is_file()}

    before = stamps()
    assert any(k.endswith(".jsonl") for k in before) and any(k.endswith(".safetensors") for k in before)
    main(args)
    assert stamps() == before
    assert json.loads((tmp_path / "summary.json").read_text())[0]["n"] == 8
    assert "[2/3]" in capsys.readouterr().out
    # a changed harvest or head setting is refused, not silently served the old harvest and head
    recorded = (tmp_path / "quickstart.json").read_bytes()
    with pytest.raises(ValueError, match=r"other settings \(harvest_examples: 12 → 13; head_epochs: 1 → 2\)"):
        main([*args, "--harvest_examples", "13", "--head_epochs", "2"])
    other = tmp_path / "head.yaml"  # the shipped head's recipe at another width: the key is named
    other.write_text("model:\n  dim: 16\n")
    with pytest.raises(ValueError, match=r"other settings \(head\.dim: 32 → 16"):
        main([*args, "--head_config", str(other)])
    assert (tmp_path / "quickstart.json").read_bytes() == recorded


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compile_select"])
def test_decode_command_on_the_embedded_model(capsys, monkeypatch, compiled):
    import depmask.commands.decode as decode_command

    asked = []
    real = decode_command.generate

    def spy(*args, **kwargs):  # the flag must reach the loop, not only be parsed and checked
        asked.append(kwargs.get("compile_select"))
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_command, "generate", spy)
    main(["decode", "--model", str(EMBEDDED), "--prompt", "<sort> 8 1 3 3 9 5 7 2", "--gen_length", "8",
          "--policy", "threshold", "--policy.threshold", "0.9", "--json_output", "true",
          "--compile_select", str(compiled).lower()])
    assert asked == [compiled]
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["rows"][0]["completion"] == "1 2 3 3 5 7 8 9"
    assert out["policy"] == "threshold" and out["nfe"] >= 1 and out["tpf"] > 1


def test_decode_command_compiles_clad_ahead_of_time(capsys):
    args = ["decode", "--model", str(EMBEDDED), "--prompt", "<sort> 8 1 3 3 9 5 7 2", "--gen_length", "8",
            "--policy", "clad", "--policy.threshold", "0.9", "--json_output", "true"]
    main(args)
    eager = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from depmask.decoding import aot as aot_module

    built = []
    real = aot_module.AotSelect.__init__

    def spy(self, *a, **k):  # the step is really compiled ahead of time, not decoded eagerly twice
        built.append(type(a[0]).__name__ if a else None)
        real(self, *a, **k)

    aot_module.AotSelect.__init__ = spy
    try:
        main([*args, "--compile_select", "aot"])
    finally:
        aot_module.AotSelect.__init__ = real
    assert built == ["Clad"]
    aot = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert aot["rows"][0]["completion"] == eager["rows"][0]["completion"] == "1 2 3 3 5 7 8 9"
    assert aot["nfe"] == eager["nfe"] and aot["policy"] == "clad"


def test_decode_command_warns_about_words_the_tokenizer_does_not_know(capsys):
    args = ["decode", "--model", str(EMBEDDED), "--gen_length", "8", "--json_output", "true"]
    with pytest.warns(UserWarning, match=r"prompt 1 \('hello <sort> world'\): 2 of 3 tokens are unknown .*\[UNK\]"):
        main([*args, "--prompt", "[<sort> 1 2, hello <sort> world]"])
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*unknown to the model's tokenizer")  # known words: none
        main([*args, "--prompt", "<sort> 8 1 3 3 9 5 7 2"])


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", "[]"], r"`prompt` / `prompt_ids` is empty"),
    (["--prompt", "<sort> 1 2", "--policy", "oracle", "--compile_select", "aot"], r"probes the model at every step"),
    (["--prompt", "<sort> 1 2", "--compile_select", "foo"], r"`compile_select` \('foo'\) must be"),
])
def test_decode_command_refuses_what_it_can_before_the_model_loads(args, message):
    with pytest.raises(ValueError, match=message):  # the model path does not exist: the refusal comes first
        main(["decode", "--model", "/nonexistent", "--gen_length", "8", *args])


def test_decode_command_names_bad_lengths():
    with pytest.raises(ValueError, match=r"`block_length` \(5\) must be >= 1 and divide `gen_length` \(8\)"):
        main(["decode", "--model", str(EMBEDDED), "--prompt", "<sort> 1 2", "--gen_length", "8",
              "--block_length", "5"])
    with pytest.raises(ValueError, match=r"`steps` \(0\) must be an int >= 1"):  # before the model loads
        main(["decode", "--model", "/nonexistent", "--prompt", "<sort> 1 2", "--gen_length", "8", "--steps", "0"])


@pytest.mark.parametrize(("args", "message"), [
    (["--n", "0"], r"`n` \(0\) must be an int >= 1 \(held-out test items per task\)"),
    (["--head_epochs", "0"], r"`head_epochs` \(0\) must be an int >= 1"),
    (["--tasks", "[]"], r"`tasks` is empty"),
    (["--tasks", "[nope]"], r"unknown task 'nope'"),
    (["--device", "cdua"], r"`device` \('cdua'\) is not a torch device"),
    (["--seed", "-1"], r"`seed` \(-1\) must be an int in \[0, 2\*\*32 - 1\]"),  # it failed after the harvest
    (["--tasks", "[sudoku4, sudoku4]"], r"names \['sudoku4'\] more than once"),
    # named by this command's flags (the harvest's names were given: `examples_per_task`, `path`)
    (["--harvest_examples", "0"], r"`harvest_examples` \(0\) must be >= 1"),
    (["--model", "/nonexistent"], r"`model` \('/nonexistent'\) is not a local model directory"),
])
def test_quickstart_refuses_bad_settings_before_any_work(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        main(["quickstart", "--out_dir", str(tmp_path / "qs"), *args])
    assert not (tmp_path / "qs").exists()


def test_quickstart_refuses_a_bad_head_config_before_the_harvest(tmp_path):
    """A bad value in the head config failed only after the harvest, and was recorded with the
    run's settings, so the corrected command was refused and the harvest had to be deleted."""
    bad = tmp_path / "head.yaml"
    bad.write_text("model:\n  pair_activation: 5\n")
    with pytest.raises(ValueError, match=r"`head_config` \(.*head\.yaml\): `pair_activation` \(5\) must be one of"):
        main(["quickstart", "--out_dir", str(tmp_path / "qs"), "--head_config", str(bad)])
    assert not (tmp_path / "qs").exists()


def test_tasks_show(capsys):
    main(["tasks", "show", "sudoku4", "--n", "2"])
    out = capsys.readouterr().out
    assert out.count("sudoku4") >= 2
    with pytest.raises(ValueError, match=r"`n` \(0\) must be an int >= 1 \(examples to print\)"):
        main(["tasks", "show", "sudoku4", "--n", "0"])
    with pytest.raises(ValueError, match=r"`name` \('gsm8k'\) is a text benchmark, not a synthetic task"):
        main(["tasks", "show", "gsm8k"])


def test_mdlm_evaluate_writes_json_and_card(tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(EMBEDDED, model)
    card, table = (model / "README.md").read_bytes(), (model / "eval.json").read_bytes()
    # the model's own table (500 items over four tasks) is not replaced by a smaller run's
    with pytest.raises(ValueError, match=r"holds the model's table of \[500\] items per task .* Give `--out`"):
        main(["mdlm", "evaluate", "--model", str(model), "--n", "4", "--tasks", "[addition]"])
    assert (model / "README.md").read_bytes() == card and (model / "eval.json").read_bytes() == table
    # with a table file of its own, only the card is at stake, and the message says so
    with pytest.raises(ValueError, match=r"would replace the model card \(README.md\) that shows it. Add "
                                         r"`--write_card false`"):
        main(["mdlm", "evaluate", "--model", str(model), "--n", "4", "--tasks", "[addition]",
              "--out", str(tmp_path / "mine.json")])
    main(["mdlm", "evaluate", "--model", str(model), "--n", "4", "--tasks", "[addition]",
          "--out", str(tmp_path / "mine.json"), "--write_card", "false"])  # a table of one's own
    assert len(json.loads((tmp_path / "mine.json").read_text())) == 5 and (model / "eval.json").read_bytes() == table
    with pytest.raises(ValueError, match=r"`out` \(.*\) is a directory"):
        main(["mdlm", "evaluate", "--model", str(model), "--n", "4", "--out", str(tmp_path), "--write_card", "false"])
    (model / "eval.json").unlink()  # a model without a table yet: it gets one, and its card
    rows = main(["mdlm", "evaluate", "--model", str(model), "--n", "4", "--tasks", "[addition]"])
    del rows
    data = json.loads((model / "eval.json").read_text())
    assert {r["setting"] for r in data} == {"one_per_step", "all_at_once", "threshold_0.5", "threshold_0.7",
                                           "threshold_0.9"}
    assert f"depmask mdlm evaluate --model {model} --n 4 --seed 0 --tasks '[addition]'`" in (model / "README.md").read_text()
    assert {r["seed"] for r in data} == {0}
    table = (model / "eval.json").read_bytes()
    # another seed draws other items: it would replace the table too (only n and tasks were compared)
    with pytest.raises(ValueError, match=r"at seed \[0\]; this run \(4 items over \['addition'\] at seed 7\)"):
        main(["mdlm", "evaluate", "--model", str(model), "--n", "4", "--tasks", "[addition]", "--seed", "7"])
    assert (model / "eval.json").read_bytes() == table


@pytest.mark.parametrize(("args", "message"), [(["--tasks", "[]"], r"`tasks` is empty"),
                                               (["--tasks", "[nope]"], r"unknown task"),
                                               (["--batch_size", "0"], r"`batch_size` \(0\) must be >= 1"),
                                               (["--tasks", "[sort, sort]"], r"names \['sort'\] more than once")])
def test_mdlm_evaluate_refuses_bad_settings_and_keeps_the_card(tmp_path, args, message):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(EMBEDDED, model)
    card, table = (model / "README.md").read_bytes(), (model / "eval.json").read_bytes()
    with pytest.raises(ValueError, match=message):
        main(["mdlm", "evaluate", "--model", str(model), "--n", "4", *args])
    assert (model / "README.md").read_bytes() == card and (model / "eval.json").read_bytes() == table


def test_decode_json_output_is_standard_json_when_tau_is_undefined(capsys):
    """Every token committed in one forward leaves Kendall's τ undefined (NaN); `json.dumps` wrote
    it as the bare token `NaN`, which no strict JSON parser reads. It is now `null`."""
    main(["decode", "--model", str(EMBEDDED), "--prompt", "<sort> 8 1 3 3 9 5 7 2", "--gen_length", "8",
          "--policy", "threshold", "--policy.threshold", "0.01", "--json_output", "true"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert summary["nfe"] == 1.0 and summary["kendall_tau"] is None


def test_decode_wraps_a_prompt_in_the_chat_template_when_the_tokenizer_has_one():
    # Instruct models (LLaDA, Dream) are trained on their chat format; `eval decode` used it and
    # `decode` fed the raw text. The template's text carries its own BOS: nothing is added.
    from transformers import AutoTokenizer

    from depmask.tasks.chat import encode_prompt

    tok = AutoTokenizer.from_pretrained(EMBEDDED, trust_remote_code=True)
    plain = tok("3 1", add_special_tokens=False)["input_ids"]
    assert encode_prompt("3 1", tok, chat=None) == plain == encode_prompt("3 1", tok, chat=False)
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompt("3 1", tok, chat=True)
    tok.chat_template = ("{% for m in messages %}[EOS] {{ m['content'] }} |{% endfor %}"
                         "{% if add_generation_prompt %} ={% endif %}")
    wrapped = tok("[EOS] 3 1 | =", add_special_tokens=False)["input_ids"]
    assert encode_prompt("3 1", tok, chat=None) == wrapped == encode_prompt("3 1", tok, chat=True)
    assert encode_prompt("3 1", tok, chat=False) == plain


def test_decode_chat_is_for_prompt_texts():
    with pytest.raises(ValueError, match="`chat` applies to prompt texts"):
        main(["decode", "--model", str(EMBEDDED), "--prompt_ids", "[[3, 4]]", "--chat", "true"])


def test_quickstart_prints_an_undefined_head_metric_as_a_dash():
    """A metric the export records as null (no val state with `precision_k` pairs) crashed the
    print between stage 2 and 3 with a TypeError."""
    from depmask.commands.quickstart import metric_text

    assert metric_text({"val/auroc": 0.96123, "val/precision_at_k": None}) == "val/auroc 0.961, val/precision_at_k —"


def test_the_card_template_reproduces_the_shipped_models_card_above_its_table():
    """A change to the template (a task list joined onto one line) would rewrite the shipped card
    the next time `mdlm evaluate` runs on it."""
    from depmask.commands.mdlm_evaluate import model_card
    from depmask.models import HFDenoiser

    den = HFDenoiser.from_pretrained(EMBEDDED)
    shipped = (EMBEDDED / "README.md").read_text()
    card = model_card(den, "TABLE", str(EMBEDDED.relative_to(ROOT)), 500, 0, "cpu")
    assert card.split("## Accuracy")[0] == shipped.split("## Accuracy")[0]
