"""Every shipped model config parses against `HFDenoiser.from_pretrained`'s signature."""

from __future__ import annotations

from pathlib import Path

import jsonargparse
import pytest

from depmask.models import HFDenoiser

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "model").glob("*.yaml"))
EXPECTED = {
    "llada-8b-instruct.yaml": {"mask_id": 126336, "capture_layers": [28, 29, 30, 31], "logits_shift": False},
    "dream-7b-instruct.yaml": {"mask_id": 151666, "capture_layers": [24, 25, 26, 27], "logits_shift": True},
}


def _parser() -> jsonargparse.ArgumentParser:
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_method_arguments(HFDenoiser, "from_pretrained")
    return parser


def test_the_expected_configs_ship():
    assert {p.name for p in CONFIGS} >= set(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_model_config_parses_against_from_pretrained(path):
    cfg = _parser().parse_path(str(path))
    assert cfg.dtype == "bfloat16" and cfg.trust_remote_code is True
    assert str(cfg.path).startswith("/path/to/")  # a placeholder the user overrides
    for key, value in EXPECTED.get(path.name, {}).items():
        assert cfg[key] == value, key


def test_path_is_overridable_and_unknown_keys_fail(tmp_path):
    parser = _parser()
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile)
    cfg = parser.parse_args(["--config", str(CONFIGS[0]), "--path", "/models/mine"])
    assert str(cfg.path) == "/models/mine"
    bad = tmp_path / "bad.yaml"
    bad.write_text("path: /x\ncapture_layer: [1]\n")  # a typo of `capture_layers`
    with pytest.raises(jsonargparse.ArgumentError):
        parser.parse_path(str(bad))
