"""Details of the results files, their provenance and the run loop that the broader tests do not
pin: which weights file a checkpoint knob is digested by, the exact shape of a run's name, the
refusal listing every difference, bad lines of undecodable bytes, the run lock's exclusivity, a
denoiser without optional attributes, the seed of a `random` run, the progress bar around the
compile warm-up and the checks `run_decode_eval` makes before anything is written."""

import fcntl
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import depmask.eval.runner as runner
from depmask.eval.items import (
    append_items,
    check_provenance,
    provenance_path,
    read_items,
    run_lock,
    run_provenance,
    run_slug,
    weights_digest,
)
from depmask.eval.runner import PolicySweep, _row_items, denoiser_settings, run_decode_eval, run_one
from depmask.models import HFDenoiser
from depmask.tasks.adapter import TaskAdapter
from depmask.tasks.base import Example
from tests.conftest import EMBEDDED

KW = dict(batch_size=2, temperature=0.0, gen_length=6, block_length=6, steps=6, seed=0)


@pytest.fixture(scope="module")
def den():
    return HFDenoiser.from_pretrained(EMBEDDED)


class Bar:
    """The part of a tqdm bar `run_one` uses."""

    def __init__(self, postfix=""):
        self.postfix, self.n = postfix, 0

    def update(self, k):
        self.n += k

    def set_postfix_str(self, s):
        self.postfix = s


# --- provenance -------------------------------------------------------------------------------


def test_a_checkpoint_with_both_weights_files_is_digested_by_its_safetensors(tmp_path):
    # the loaders prefer `model.safetensors`: its bytes, not a stale `.bin`'s, tie the run
    (tmp_path / "model.safetensors").write_bytes(b"safetensors weights")
    (tmp_path / "pytorch_model.bin").write_bytes(b"old bin weights")
    assert weights_digest(tmp_path) == hashlib.sha256(b"safetensors weights").hexdigest()[:16]


def test_a_head_given_as_a_path_object_is_tied_to_its_weights(tmp_path):
    """The Python API takes `Path` knobs (a `Path` head stays in the summary rows): it is digested
    as its text would be."""
    (tmp_path / "model.safetensors").write_bytes(b"head weights")
    assert run_provenance("m", {"head": tmp_path})["head_weights"] == weights_digest(tmp_path)


def test_a_directory_knob_without_weights_records_no_digest(tmp_path):
    # a directory that is not a checkpoint adds no `<knob>_weights` key (not one set to None)
    assert "dir_weights" not in run_provenance("m", {"dir": str(tmp_path)})


def test_a_refusal_lists_every_difference_in_key_order(tmp_path):
    items = tmp_path / "run.jsonl"
    check_provenance(items, {"model": "m@1", "decoding": {"steps": 8, "temperature": 0.0}}, have_rows=False)
    with pytest.raises(ValueError, match=r"settings: decoding\.steps was 8, this run has 4; "
                                         r"model was 'm@1', this run has 'm@2'\. Use another --output"):
        check_provenance(items, {"model": "m@2", "decoding": {"steps": 4, "temperature": 0.0}}, have_rows=True)


# --- run names and results files ------------------------------------------------------------


def test_run_names_are_stable_across_versions():
    """A run's name is its results file: a changed name decodes every existing output again. Numeric
    knobs show in name order whatever order they are given in; a run without any has no `__`."""
    assert run_slug("low_confidence", {}) == "low_confidence_bf21a9e8"
    expected = "guided_epsilon=0.2_threshold=0.9_58fb5a93"
    assert run_slug("guided", {"threshold": 0.9, "epsilon": 0.2, "rule": "conflict"}) == expected
    assert run_slug("guided", {"rule": "conflict", "epsilon": 0.2, "threshold": 0.9}) == expected


def test_exactly_ten_bad_lines_are_all_listed_without_an_ellipsis(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join("not json\n" for _ in range(10)) + '{"id": "a"}\n')
    with pytest.warns(UserWarning, match=r"skipped 10 line\(s\) .*\(line\(s\) 1, 2, 3, 4, 5, 6, 7, 8, 9, 10\); their"):
        assert read_items(path) == [{"id": "a"}]


def test_a_line_of_undecodable_bytes_is_skipped_like_any_bad_line(tmp_path):
    # interleaved writes can split a multi-byte character: the line is skipped, not the whole read lost
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "\xff\xfe"}\n{"id": "b"}\n')
    with pytest.warns(UserWarning, match=r"skipped 1 line\(s\) .*\(line\(s\) 2\)"):
        assert read_items(path) == [{"id": "a"}, {"id": "b"}]
    assert path.read_bytes().count(b"\n") == 3  # left in the file


def test_appending_creates_the_results_directory(tmp_path):
    path = tmp_path / "items" / "sort" / "run.jsonl"
    append_items(path, [{"id": "a"}])
    assert read_items(path) == [{"id": "a"}]


def test_the_run_lock_is_exclusive_even_to_a_shared_locker(tmp_path):
    """flock locks belong to the open file: a second opening of the lock file, even for a shared
    lock, must be turned away while a run is held."""
    items = tmp_path / "items" / "run.jsonl"
    with run_lock(items):
        with open(items.with_suffix(".lock"), "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
    with open(items.with_suffix(".lock"), "a") as other:  # released after the block
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


# --- the run loop ---------------------------------------------------------------------------


def test_a_policy_without_probes_records_zero_probe_forwards():
    res = SimpleNamespace(nfe=torch.tensor([4, 6]), probe_nfe=None, tpf=lambda: torch.tensor([1.0, 1.0]),
                          afp=lambda: torch.tensor([0.5, 0.5]), kendall_tau=lambda: torch.tensor([1.0, 1.0]),
                          commit_step=torch.tensor([[0], [0]]))
    exs = [Example(id=f"t:test:0:{i}", task="t", prompt="p", answer="a") for i in range(2)]
    rows = _row_items(res, 2, [1, 1], 1.0, exs, ["a", "b"], [True, False], "g")
    assert [(r["nfe"], r["probe_nfe"]) for r in rows] == [(4, 0), (6, 0)]


def test_denoiser_settings_of_a_denoiser_without_optional_attributes():
    """A denoiser that sets none of them (or EOS ids to None) is recorded with None / [] rather than
    failing or writing the text 'None' as its dtype."""
    bare = {"dtype": None, "device": "cpu", "mask_id": None, "eos_ids": [], "logits_shift": None,
            "capture_layers": None}
    assert denoiser_settings(SimpleNamespace()) == bare
    assert denoiser_settings(SimpleNamespace(eos_ids=None)) == bare


def test_a_random_run_records_its_seed_even_at_temperature_zero(tmp_path, den):
    """`random` draws its positions from the seeded generator at temperature 0 too, so its seed
    decides the items: resuming it under another seed is refused, as a sampled run's is."""
    adapter = TaskAdapter.build("permutation")
    exs = adapter.examples("test", 2, 0)
    path = tmp_path / "r.jsonl"
    run_one(den, adapter, "random", {}, exs, path, **{**KW, "seed": 3})
    assert json.loads(provenance_path(path).read_text())["decoding"]["seed"] == 3
    with pytest.raises(ValueError, match=r"decoding\.seed was 3, this run has 4"):
        run_one(den, adapter, "random", {}, exs, path, **{**KW, "seed": 4})


def test_the_compile_warm_up_decodes_one_batch_and_restores_the_bar(tmp_path, den, monkeypatch):
    """With a compile mode the first batch is decoded once more, untimed, while the bar says
    `compiling (jit)`; the bar then shows what it showed before. Nothing is warmed up when
    everything is resumed. (Decoded eagerly here: only the calls are observed.)"""
    calls = []

    def eager(den_, prompts, policy, **kwargs):
        calls.append((kwargs["compile_select"], len(prompts), bar.postfix))
        return generate(den_, prompts, policy, **{**kwargs, "compile_select": False})

    generate = runner.generate
    monkeypatch.setattr(runner, "generate", eager)
    adapter = TaskAdapter.build("permutation")
    exs = adapter.examples("test", 3, 0)
    bar = Bar("task=permutation")
    row = run_one(den, adapter, "low_confidence", {}, exs, tmp_path / "r.jsonl", bar=bar, compile_select="jit", **KW)
    assert calls == [("jit", 2, "task=permutation, compiling (jit)"), ("jit", 2, "task=permutation"),
                     ("jit", 1, "task=permutation")]
    assert bar.postfix == "task=permutation" and row["n"] == 3 and row["compile_select"] == "jit"
    calls.clear()
    run_one(den, adapter, "low_confidence", {}, exs, tmp_path / "r.jsonl", bar=Bar(), compile_select="jit", **KW)
    assert calls == []


@pytest.mark.parametrize("kwargs, message", [
    # 0 used to fall back to the task's length silently
    ({"steps": 0}, r"`steps` \(0\) must be an int >= 1"),
    ({"temperature": float("nan")}, r"`temperature` \(nan\) must be a finite number"),
    # a bad knob of a later sweep fails before the first sweep's runs decode
    ({"policies": [PolicySweep("low_confidence"), PolicySweep("threshold", knobs={"no_such_knob": 1})]},
     r"policy sweep 'threshold'"),
    ({"compile_select": "fast"}, r"`compile_select` \('fast'\) must be"),
])
def test_run_decode_eval_refuses_bad_settings_before_anything_is_written(tmp_path, den, kwargs, message):
    kwargs = {"policies": [PolicySweep("low_confidence")], **kwargs}
    with pytest.raises(ValueError, match=message):
        run_decode_eval(den, ["sort"], output=tmp_path / "ev", n=2, batch_size=2, **kwargs)
    assert not (tmp_path / "ev").exists()


def test_an_output_under_home_is_expanded(tmp_path, den, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run_decode_eval(den, ["sort"], [PolicySweep("low_confidence")], "~/ev", n=1, batch_size=1)
    assert (tmp_path / "home" / "ev" / "runs.json").is_file()
    assert not Path("~").exists()  # not a directory named `~` in the working directory
