"""`depmask eval decode --compile_select`: compiled where a policy can be, the same items as eager,
compilation outside the timed batches, and the mode recorded so that runs are not mixed."""

import json

import pytest
import torch

import depmask.eval.runner as runner
from depmask.cli import main
from depmask.eval.items import provenance_path, read_items, run_slug
from depmask.models import HFDenoiser
from depmask.predictor import DependencyHead
from tests.conftest import EMBEDDED


def _args(out, head, *extra):
    policies = ("[{name: low_confidence}, {name: oracle, sweep: {epsilon: [0.5]}}, "
                f"{{name: demask, knobs: {{head: {head}}}, sweep: {{epsilon: [0.3]}}}}]")
    return ["eval", "decode", "--model.path", str(EMBEDDED), "--tasks", "[sudoku4]", "--n", "5",
            "--batch_size", "3", "--bootstrap", "0", "--policies", policies, "--output", str(out), *extra]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    den = HFDenoiser.from_pretrained(EMBEDDED)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("head") / "head"
    DependencyHead(den.hidden_size, dim=16, layers=0, heads=2, base_fingerprint=den.fingerprint).save_pretrained(path)
    return path


def test_compiled_eval_decodes_what_eager_does_and_records_the_mode(tmp_path, head, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append((args[2].name, kwargs["compile_select"], len(args[1])))
        return generate(*args, **kwargs)

    generate = runner.generate
    monkeypatch.setattr(runner, "generate", counting)
    main(_args(tmp_path / "eager", head))
    eager_calls, calls[:] = list(calls), []
    main(_args(tmp_path / "aot", head, "--compile_select", "aot"))

    # demask compiles: one untimed decode of the first batch, then the two timed batches (3 + 2 items);
    # low_confidence (no declared state) and the oracle (it probes the model) stay eager
    assert [c for c in calls if c[0] == "demask"] == [("demask", "aot", 3), ("demask", "aot", 3), ("demask", "aot", 2)]
    assert {c[1] for c in calls if c[0] != "demask"} == {False}
    assert [c for c in calls if c[0] != "demask"] == [c for c in eager_calls if c[0] != "demask"]
    assert all(c[1] is False for c in eager_calls)

    rows = {r["policy"]: r for r in json.loads((tmp_path / "aot" / "summary.json").read_text())}
    assert rows["demask"]["compile_select"] == "aot"
    assert "compile_select" not in rows["low_confidence"] and "compile_select" not in rows["oracle"]
    assert rows["demask"]["n"] == 5  # the untimed decode wrote no items
    for policy, knobs in (("demask", {"epsilon": 0.3, "head": str(head)}), ("low_confidence", {})):
        slug = run_slug(policy, knobs)
        compiled = read_items(tmp_path / "aot" / "items" / "sudoku4" / f"{slug}.jsonl")
        plain = read_items(tmp_path / "eager" / "items" / "sudoku4" / f"{slug}.jsonl")
        assert len(compiled) == 5
        for a, b in zip(compiled, plain):
            assert (a["id"], a["completion"], a["commit_step"], a["nfe"]) == (b["id"], b["completion"],
                                                                             b["commit_step"], b["nfe"])
        side = json.loads(provenance_path(tmp_path / "aot" / "items" / "sudoku4" / f"{slug}.jsonl").read_text())
        assert side.get("compile_select") == ("aot" if policy == "demask" else None)


def test_a_run_is_not_resumed_under_another_compile_mode(tmp_path, head):
    out = tmp_path / "ev"
    main(_args(out, head, "--compile_select", "aot"))
    main(_args(out, head, "--compile_select", "aot"))  # same mode: everything is resumed
    with pytest.raises(ValueError, match=r"demask_epsilon=0\.3_[0-9a-f]{8}\.jsonl holds items decoded with a "
                                         r"different model, head, compiled selection or decoding settings: "
                                         r"compile_select was 'aot', this run has None"):
        main(_args(out, head))


def test_eval_decode_refuses_a_bad_compile_mode_before_loading(tmp_path):
    with pytest.raises(ValueError, match=r"`compile_select` \('fast'\) must be"):
        main(["eval", "decode", "--model.path", str(tmp_path / "missing"), "--compile_select", "fast",
              "--output", str(tmp_path / "ev")])
