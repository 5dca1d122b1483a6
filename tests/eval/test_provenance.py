"""Results files remember what decoded them: resuming with other head weights (or another model,
or other decoding settings) under the same knobs is refused instead of mixing two heads' items in
one run, or reporting one setting's items as another's."""

import json

import pytest
import torch

from depmask.cli import main
from depmask.eval.items import (
    DECODE_REVISION,
    check_provenance,
    provenance_path,
    run_provenance,
    weights_digest,
)
from depmask.models import HFDenoiser
from depmask.predictor import DependencyHead
from tests.conftest import EMBEDDED, ROOT


def _checkpoint(directory, content: bytes):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(content)
    return directory


def test_provenance_digests_the_weights_of_checkpoint_knobs(tmp_path):
    head = _checkpoint(tmp_path / "head", b"weights one")
    first = run_provenance("model@a", {"head": str(head), "epsilon": 0.5, "units": "token"})
    assert set(first) == {"model", "head_weights", "revision"} and first["model"] == "model@a"
    assert first["head_weights"] == weights_digest(head) and len(first["head_weights"]) == 16
    _checkpoint(head, b"weights two")  # retrained into the same directory
    assert run_provenance("model@a", {"head": str(head), "epsilon": 0.5})["head_weights"] != first["head_weights"]
    assert run_provenance("model@a", {"head": str(tmp_path / "missing")}) == {"model": "model@a",
                                                                             "revision": DECODE_REVISION}
    assert weights_digest(tmp_path) is None


def test_check_provenance_writes_accepts_refuses_and_warns(tmp_path):
    items = tmp_path / "items" / "run.jsonl"
    mine = {"model": "m@1", "head_weights": "aaaa"}
    check_provenance(items, mine, have_rows=False)  # a fresh run records what decodes it
    assert json.loads(provenance_path(items).read_text()) == mine
    check_provenance(items, dict(mine), have_rows=True)  # the same: resume
    with pytest.raises(ValueError, match=r"run\.jsonl holds items decoded with a different model, head, "
                                         r"compiled selection or decoding settings: head_weights was 'aaaa', "
                                         r"this run has 'bbbb'\. Use another --output"):
        check_provenance(items, {"model": "m@1", "head_weights": "bbbb"}, have_rows=True)
    with pytest.raises(ValueError, match=r"model was 'm@1', this run has 'm@2'"):
        check_provenance(items, {"model": "m@2", "head_weights": "aaaa"}, have_rows=True)
    provenance_path(items).unlink()  # a file from before sidecars existed
    with pytest.warns(UserWarning, match="no provenance record"):
        check_provenance(items, mine, have_rows=True)


def test_eval_decode_refuses_to_resume_with_a_retrained_head(tmp_path):
    den = HFDenoiser.from_pretrained(EMBEDDED)
    head_dir = tmp_path / "head"

    def export(seed: int):
        torch.manual_seed(seed)
        DependencyHead(den.hidden_size, dim=16, layers=0, heads=2, base_fingerprint=den.fingerprint).save_pretrained(
            head_dir)

    args = ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "4", "--batch_size", "4",
            "--bootstrap", "0", "--policies", f"[{{name: demask, knobs: {{head: {head_dir}}}, sweep: {{epsilon: [0.3]}}}}]",
            "--output", str(tmp_path / "ev")]
    export(0)
    main(args)
    main(args)  # same weights: everything is resumed
    export(1)  # a retrained head exported to the same directory
    with pytest.raises(ValueError, match=r"head_weights was '[0-9a-f]{16}', this run has '[0-9a-f]{16}'"):
        main(args)


def test_eval_decode_refuses_to_resume_with_other_decoding_settings(tmp_path):
    """Item ids name the task, split, seed and index only: a re-run into the same output with
    another `--steps`, `--temperature`, length, task argument or dtype reported the first run's
    items as its own (NFE 8 under `--steps 2`). Now it is refused, naming what differs; the same
    settings, a task argument given at its default value, or another batch size resume."""
    base = ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "4", "--batch_size", "4",
            "--bootstrap", "0", "--policies", "[{name: low_confidence}]", "--output", str(tmp_path / "ev")]
    main(base)
    main([*base, "--task_kwargs", "{sort: {n: 8}}"])  # the default value: the same task
    main([*base, "--batch_size", "2"])  # batching does not change a temperature-0 decode
    for extra, differs in [(["--steps", "2"], r"decoding\.steps was 8, this run has 2"),
                           (["--temperature", "1.0"], r"decoding\.temperature was 0\.0, this run has 1\.0"),
                           (["--gen_length", "10", "--block_length", "10"], r"decoding\.gen_length was 8, this run has 10"),
                           (["--task_kwargs", "{sort: {n: 6}}"], r"decoding\.task_arguments was"),
                           (["--model.dtype", "bfloat16"], r"denoiser\.dtype was 'float32', this run has 'bfloat16'")]:
        with pytest.raises(ValueError, match=differs):
            main([*base, *extra])
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary[0]["nfe"] == 8.0  # no refused run rewrote the summary


def test_a_record_from_before_the_decoding_settings_is_checked_on_the_rest(tmp_path):
    items = tmp_path / "items" / "run.jsonl"
    check_provenance(items, {"model": "m@1"}, have_rows=False)  # written before the settings were recorded
    now = {"model": "m@1", "decoding": {"steps": 8}, "denoiser": {"dtype": "float32"}}
    check_provenance(items, now, have_rows=True)  # resumed: nothing to compare the settings with
    with pytest.raises(ValueError, match=r"model was 'm@1', this run has 'm@2'"):
        check_provenance(items, {**now, "model": "m@2"}, have_rows=True)
    check_provenance(items, now, have_rows=False)  # a fresh start records them
    with pytest.raises(ValueError, match=r"decoding\.steps was 8, this run has 4"):
        check_provenance(items, {**now, "decoding": {"steps": 4}}, have_rows=True)


def test_a_sampled_run_remembers_its_seed(tmp_path):
    """At temperature > 0 the seed draws the samples, and a benchmark's item ids do not name it: a
    re-run with another `--seed` into the same output served the first seed's samples as its own.
    The sampling seed is now part of the decoding settings; at temperature 0 it is not (argmax
    decoding does not read it)."""
    base = ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sort]", "--n", "2", "--batch_size", "2",
            "--bootstrap", "0", "--policies", "[{name: low_confidence}]"]
    sampled = [*base, "--temperature", "1.0", "--output", str(tmp_path / "t1")]
    main([*sampled, "--seed", "0"])
    main([*sampled, "--seed", "0"])  # the same seed resumes
    with pytest.raises(ValueError, match=r"decoding\.seed was 0, this run has 1"):
        main([*sampled, "--seed", "1"])
    argmax = [*base, "--output", str(tmp_path / "t0")]
    main([*argmax, "--seed", "0"])
    main([*argmax, "--seed", "1"])  # argmax decoding: other items of the same run, nothing to refuse
    sidecar = json.loads(next((tmp_path / "t0" / "items" / "sort").glob("*.provenance.json")).read_text())
    assert "seed" not in sidecar["decoding"]


def test_a_record_of_another_revision_is_resumed_with_a_warning_and_an_old_sampled_run_resumes(tmp_path):
    """A sidecar without the revision (written before 2026-11-30's decoding fixes) is resumed, with a
    warning that says what changed since; one without a sampling seed (recorded since the same day)
    is checked on the rest, as other settings recorded later are."""
    items = tmp_path / "items" / "run.jsonl"
    now = run_provenance("m@1", {}, decoding={"temperature": 1.0, "steps": 8, "seed": 0})
    check_provenance(items, {"model": "m@1", "decoding": {"temperature": 1.0, "steps": 8}}, have_rows=False)
    with pytest.warns(UserWarning, match=r"decoded by depmask revision before 2026-11-30.*oracle no longer probes"):
        check_provenance(items, now, have_rows=True)
    with pytest.raises(ValueError, match=r"decoding\.steps was 8, this run has 4"):
        check_provenance(items, run_provenance("m@1", {}, decoding={"temperature": 1.0, "steps": 4, "seed": 0}),
                         have_rows=True)
    check_provenance(items, now, have_rows=False)  # a fresh start records the revision and the seed
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_provenance(items, now, have_rows=True)


def test_a_head_given_with_a_tilde_is_tied_to_its_weights(tmp_path, monkeypatch):
    """`head: ~/h` loads (the loader expands it) but recorded no weights digest, so a head
    retrained in place was taken for the old one."""
    import shutil

    from depmask.eval.items import run_provenance

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(ROOT / "models" / "tiny-tasks-head", tmp_path / "h")
    assert run_provenance("m", {"head": "~/h"})["head_weights"] == run_provenance("m", {"head": str(tmp_path / "h")})["head_weights"]
