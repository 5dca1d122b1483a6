"""Head checkpoints: round trip, compatibility checks against a denoiser, and clear errors."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch

from depmask.predictor import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, DependencyHead

D = 24
FP = "tiny@local:abc-123"


def _head(**kw) -> DependencyHead:
    torch.manual_seed(0)
    kw = {"dim": 16, "layers": 1, "heads": 2, "max_distance": 4, "base_fingerprint": FP, **kw}
    return DependencyHead(D, **kw).eval()


def _inputs(b: int = 2, m: int = 5):
    g = torch.Generator().manual_seed(3)
    valid = torch.ones(b, m, dtype=torch.bool)
    valid[1, -1] = False
    return (torch.randn(b, m, D, generator=g), torch.arange(m).repeat(b, 1) * 2 + 7, valid,
            torch.rand(b, m, generator=g), torch.rand(b, m, generator=g))


def test_round_trip(tmp_path):
    head = _head(dropout=0.1)
    manifest = {"shards": ["a", "b"], "states": 1234}
    out = head.save_pretrained(tmp_path / "ckpt", training_manifest=manifest)
    assert (out / CONFIG_NAME).is_file() and (out / WEIGHTS_NAME).is_file()
    saved = json.loads((out / CONFIG_NAME).read_text())
    assert saved["base_fingerprint"] == FP and saved["hidden_size"] == D
    assert saved["training_manifest"] == manifest and saved["format_version"] == FORMAT_VERSION
    assert "depmask_version" in saved
    loaded = DependencyHead.from_pretrained(out)
    assert not loaded.training and loaded.config == head.config
    assert loaded.training_manifest == manifest
    x = _inputs()
    assert torch.equal(loaded(*x), head(*x))
    assert torch.equal(loaded.predict(*x), head.predict(*x))
    # saving again keeps the manifest it was loaded with
    again = loaded.save_pretrained(tmp_path / "again")
    assert json.loads((again / CONFIG_NAME).read_text())["training_manifest"] == manifest


def test_lean_round_trip_and_checkpoints_from_before_pair_mlp(tmp_path):
    lean = _head(layers=0, pair_mlp=False)
    loaded = DependencyHead.from_pretrained(lean.save_pretrained(tmp_path / "lean"))
    assert loaded.config["pair_mlp"] is False
    x = _inputs()
    assert torch.equal(loaded.predict(*x), lean.predict(*x))
    old = _head().save_pretrained(tmp_path / "old")  # written before `pair_mlp` existed: no key
    _edit(old / CONFIG_NAME, drop="pair_mlp")
    assert DependencyHead.from_pretrained(old).config["pair_mlp"] is True


def test_small_round_trip_and_checkpoints_from_before_pair_product(tmp_path):
    small = _head(layers=0, pair_product=False, pair_activation="relu")
    loaded = DependencyHead.from_pretrained(small.save_pretrained(tmp_path / "small"))
    assert loaded.config["pair_product"] is False and loaded.config["pair_activation"] == "relu"
    x = _inputs()
    assert torch.equal(loaded.predict(*x), small.predict(*x))
    old = _head().save_pretrained(tmp_path / "old")  # written before the two keys existed
    _edit(old / CONFIG_NAME, drop="pair_product")
    _edit(old / CONFIG_NAME, drop="pair_activation")
    config = DependencyHead.from_pretrained(old).config
    assert config["pair_product"] is True and config["pair_activation"] == "gelu"


@pytest.mark.parametrize(("key", "module"), [("set_context", "context"), ("pair_refine", "refine")])
def test_an_optional_part_round_trips_and_older_checkpoints_lack_it(tmp_path, key, module):
    head = _head(layers=0, **{key: True})
    with torch.no_grad():  # `pair_refine` starts as a no-op: make the part act
        for p in getattr(head, module).parameters():
            p.normal_(std=0.5)
    loaded = DependencyHead.from_pretrained(head.save_pretrained(tmp_path / key))
    assert loaded.config[key] is True and getattr(loaded, module) is not None
    x = _inputs()
    assert torch.equal(loaded.predict(*x), head.predict(*x))
    old = _head().save_pretrained(tmp_path / "old")  # written before the key existed
    _edit(old / CONFIG_NAME, drop=key)
    loaded = DependencyHead.from_pretrained(old)
    assert loaded.config[key] is False and getattr(loaded, module) is None


def test_round_trip_keeps_dtype(tmp_path):
    head = _head(use_confidence=False).to(torch.bfloat16)
    loaded = DependencyHead.from_pretrained(head.save_pretrained(tmp_path))
    assert loaded.norm.weight.dtype == torch.bfloat16
    x = _inputs()[:3]
    assert torch.equal(loaded(*x), head(*x))


def test_compatible_denoiser(tmp_path):
    path = _head().save_pretrained(tmp_path)
    ok = SimpleNamespace(fingerprint=FP, hidden_size=D)
    head = DependencyHead.from_pretrained(path, denoiser=ok)
    head.check_compatible(ok)


def test_mismatched_fingerprint_names_both(tmp_path):
    path = _head().save_pretrained(tmp_path)
    other = SimpleNamespace(fingerprint="llada@deadbeef:xyz-999", hidden_size=D)
    with pytest.raises(ValueError) as err:
        DependencyHead.from_pretrained(path, denoiser=other)
    assert FP in str(err.value) and "llada@deadbeef:xyz-999" in str(err.value)
    with pytest.raises(ValueError, match="llada@deadbeef"):
        _head().check_compatible(other)


def test_mismatched_hidden_size_names_both(tmp_path):
    path = _head().save_pretrained(tmp_path)
    other = SimpleNamespace(fingerprint=FP, hidden_size=4096)
    with pytest.raises(ValueError, match=rf"hidden size: head expects {D}, denoiser has 4096"):
        DependencyHead.from_pretrained(path, denoiser=other)
    with pytest.raises(TypeError, match="fingerprint"):
        _head().check_compatible(SimpleNamespace(hidden_size=D))


def test_missing_directory_and_files(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        DependencyHead.from_pretrained(missing)
    path = _head().save_pretrained(tmp_path / "ckpt")
    (path / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        DependencyHead.from_pretrained(path)


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (lambda p: p.write_text("{not json"), "not valid JSON"),
        (lambda p: p.write_text("[1, 2]"), "expected a JSON object"),
        (lambda p: _edit(p, dim="wide"), r"`dim` is 'wide', expected int"),
        (lambda p: _edit(p, use_confidence=1), r"`use_confidence` is 1, expected bool"),
        (lambda p: _edit(p, heads=True), r"`heads` is True, expected int"),
        (lambda p: _edit(p, pair_mlp="yes"), r"`pair_mlp` is 'yes', expected bool"),
        (lambda p: _edit(p, pair_activation=1), r"`pair_activation` is 1, expected str"),
        (lambda p: _edit(p, pair_activation="tanh"), r"invalid architecture .*`pair_activation` \('tanh'\)"),
        (lambda p: _edit(p, format_version=99), "`format_version` is 99"),
        (lambda p: p.write_text('{"model_type": "tiny_mdlm", "hidden_size": 128}'),
         r"not a dependency-head directory \(a 'tiny_mdlm' model's config\?\): its config has no `format_version`"),
        (lambda p: _edit(p, drop="layers"), r"missing key\(s\) \['layers'\]"),
        (lambda p: _edit(p, heads=3), r"invalid architecture .*`heads` \(3\) must divide"),
        (lambda p: _edit(p, dim=32, heads=2), "does not match"),
    ],
)
def test_bad_config(tmp_path, corrupt, expected):
    path = _head().save_pretrained(tmp_path)
    corrupt(path / CONFIG_NAME)
    with pytest.raises(ValueError, match=expected) as err:
        DependencyHead.from_pretrained(path)
    assert str(path) in str(err.value)


def _edit(path, drop: str | None = None, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    config.pop(drop, None)
    path.write_text(json.dumps(config))


def test_corrupt_weights(tmp_path):
    path = _head().save_pretrained(tmp_path)
    (path / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=WEIGHTS_NAME):
        DependencyHead.from_pretrained(path)


def test_manifest_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="training_manifest"):
        _head().save_pretrained(tmp_path, training_manifest={"when": object()})
    assert not (tmp_path / CONFIG_NAME).exists()


def test_a_bad_map_location_is_named_not_blamed_on_the_weights(tmp_path):
    out = _head().save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"`map_location` \('gpu'\) is not a device"):
        DependencyHead.from_pretrained(out, map_location="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"`map_location` \('cuda'\): this machine has no CUDA device"):
            DependencyHead.from_pretrained(out, map_location="cuda")


def test_an_export_killed_between_its_two_files_leaves_no_config(tmp_path, monkeypatch):
    """New weights beside the old `config.json` (old architecture, old manifest) could load; with
    the config removed first, a half-written export is refused as incomplete."""
    from depmask.predictor import io

    out = _head().save_pretrained(tmp_path / "ckpt", training_manifest={"run": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        _head(dim=32).save_pretrained(out, training_manifest={"run": 2})
    assert not (out / CONFIG_NAME).exists()
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        DependencyHead.from_pretrained(out)


def test_capture_layers_problem_names_two_different_explicit_layer_sets():
    from depmask.predictor.io import capture_layers_problem

    manifest = {"capture_layers": [0]}
    assert capture_layers_problem(True, manifest, [3]) == ("the head reads attention over layers [0], the harvest "
                                                            "captured layers [3]")
    assert capture_layers_problem(True, manifest, [0]) is None
    assert capture_layers_problem(False, manifest, [3]) is None  # reads no attention
    assert capture_layers_problem(True, {"capture_layers": None}, [3]) is None  # a default: unresolved here
    assert capture_layers_problem(True, None, [3]) is None  # a head from before the record


def test_save_pretrained_does_not_replace_a_models_directory(tmp_path):
    """Only `train fit` checked its export directory: `head.save_pretrained(model_dir)` replaced the
    model's config.json and weights with the head's."""
    model = tmp_path / "model"
    model.mkdir()
    (model / CONFIG_NAME).write_text(json.dumps({"model_type": "tiny_mdlm", "hidden_size": D}))
    (model / WEIGHTS_NAME).write_bytes(b"model weights")
    with pytest.raises(ValueError, match=r"`directory` \(.*model'\) holds a model \('tiny_mdlm'\)"):
        _head().save_pretrained(model)
    assert json.loads((model / CONFIG_NAME).read_text())["model_type"] == "tiny_mdlm"
    assert (model / WEIGHTS_NAME).read_bytes() == b"model weights"
    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(ValueError, match="a config.json that is not a head's"):
        _head().save_pretrained(other)
    head_dir = _head().save_pretrained(tmp_path / "head")  # a head's own directory is written again
    assert _head(dim=32, heads=4).save_pretrained(head_dir) == head_dir
    assert DependencyHead.from_pretrained(head_dir).config["dim"] == 32


def test_the_same_weights_save_to_the_same_bytes(tmp_path):
    """safetensors wrote a two-key metadata map in a random order per process: identical weights
    saved in two processes had other bytes, so their digest (eval provenance) differed."""
    import subprocess
    import sys

    code = ("import sys, torch; from depmask.predictor import DependencyHead; torch.manual_seed(0); "
            "DependencyHead(24, dim=16, layers=0, heads=2, base_fingerprint='x').save_pretrained(sys.argv[1])")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, timeout=120)
    files = {(tmp_path / n / WEIGHTS_NAME).read_bytes() for n in ("a", "b", "c")}
    assert len(files) == 1


def test_a_head_without_a_base_model_is_named_when_checked(tmp_path):
    """A head built in Python without `base_fingerprint` passed for any model of its width without a word."""
    den = SimpleNamespace(fingerprint=FP, hidden_size=D)
    _head(base_fingerprint=None).save_pretrained(tmp_path / "h")
    with pytest.warns(UserWarning, match=r"records no base model .* checked against 'tiny@local:abc-123' on hidden"):
        DependencyHead.from_pretrained(tmp_path / "h", denoiser=den)
