"""Results files remember what decoded them: resuming with other head weights (or another model)
under the same knobs is refused instead of mixing two heads' items in one run."""

import json

import pytest
import torch

from depmask.cli import main
from depmask.eval.items import check_provenance, provenance_path, run_provenance, weights_digest
from depmask.models import HFDenoiser
from depmask.predictor import DependencyHead
from tests.conftest import EMBEDDED


def _checkpoint(directory, content: bytes):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(content)
    return directory


def test_provenance_digests_the_weights_of_checkpoint_knobs(tmp_path):
    head = _checkpoint(tmp_path / "head", b"weights one")
    first = run_provenance("model@a", {"head": str(head), "epsilon": 0.5, "units": "token"})
    assert set(first) == {"model", "head_weights"} and first["model"] == "model@a"
    assert first["head_weights"] == weights_digest(head) and len(first["head_weights"]) == 16
    _checkpoint(head, b"weights two")  # retrained into the same directory
    assert run_provenance("model@a", {"head": str(head), "epsilon": 0.5})["head_weights"] != first["head_weights"]
    assert run_provenance("model@a", {"head": str(tmp_path / "missing")}) == {"model": "model@a"}
    assert weights_digest(tmp_path) is None


def test_check_provenance_writes_accepts_refuses_and_warns(tmp_path):
    items = tmp_path / "items" / "run.jsonl"
    mine = {"model": "m@1", "head_weights": "aaaa"}
    check_provenance(items, mine, have_rows=False)  # a fresh run records what decodes it
    assert json.loads(provenance_path(items).read_text()) == mine
    check_provenance(items, dict(mine), have_rows=True)  # the same: resume
    with pytest.raises(ValueError, match=r"run\.jsonl holds items decoded with a different model, head or "
                                         r"compiled selection: head_weights was 'aaaa', this run has 'bbbb'\. "
                                         r"Use another --output"):
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
