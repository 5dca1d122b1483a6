"""Tiny models built from config with random weights and saved to temporary directories."""

import shutil
from pathlib import Path

import pytest
import torch

from depmask.models.tiny_mdlm import (
    REMOTE_CODE_FILES,
    TinyMDLMConfig,
    TinyMDLMForMaskedLM,
    save_tiny_mdlm,
)

FIXTURES = Path(__file__).parent / "fixtures"
TINY = dict(vocab_size=40, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, mask_token_id=39, pad_token_id=37,
            eos_token_id=38)


def tiny_mdlm(seed: int = 0, **overrides) -> TinyMDLMForMaskedLM:
    torch.manual_seed(seed)
    return TinyMDLMForMaskedLM(TinyMDLMConfig(**{**TINY, **overrides})).eval()


@pytest.fixture
def tiny_mdlm_dir(tmp_path):
    """A LLaDA-shaped remote-code checkpoint: weights + modeling code + auto_map."""
    return save_tiny_mdlm(tiny_mdlm(), tmp_path / "tiny-mdlm")


@pytest.fixture
def tiny_dream_dir(tmp_path):
    """A Dream-shaped remote-code checkpoint (model_type says Dream) with the same weights."""
    import depmask.models.tiny_mdlm as pkg

    src = tiny_mdlm()
    out = tmp_path / "tiny-dream"
    out.mkdir()
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(Path(pkg.__file__).parent / name, out / name)
    for f in (FIXTURES / "tiny_dream").glob("*.py"):
        shutil.copyfile(f, out / f.name)
    state = src.state_dict()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors")
    cfg = src.config.to_dict()
    cfg.update(model_type="tiny_dream", architectures=["TinyDreamModel"], auto_map={
        "AutoConfig": "configuration_tiny_dream.TinyDreamConfig",
        "AutoModel": "modeling_tiny_dream.TinyDreamModel",
    })
    import json

    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


@pytest.fixture
def tiny_bert_dir(tmp_path):
    """A BERT-like masked LM from config (HF-native attention), saved in sdpa and eager flavours."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    model = BertForMaskedLM(cfg).eval()
    out = tmp_path / "tiny-bert"
    model.save_pretrained(out)
    return out


@pytest.fixture
def tiny_llada_v4_dir(tmp_path):
    """A checkpoint whose own code is written for transformers 4 the way LLaDA-8B's is (see the
    fixture's modeling file); weights written directly, as a transformers-4 save would hold them."""
    import json

    from safetensors.torch import save_file

    out = tmp_path / "tiny-llada-v4"
    out.mkdir()
    for f in (FIXTURES / "tiny_llada_v4").glob("*.py"):
        shutil.copyfile(f, out / f.name)
    torch.manual_seed(0)
    state = {"model.wte.weight": torch.randn(40, 16), "model.ff_out.weight": torch.randn(40, 16)}
    for i in range(2):
        state[f"model.blocks.{i}.weight"] = torch.randn(16, 16) * 0.1
        state[f"model.blocks.{i}.bias"] = torch.randn(16) * 0.1
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps({
        "model_type": "tiny_llada_v4", "architectures": ["TinyLLaDAV4"], "vocab_size": 40, "hidden_size": 16,
        "num_hidden_layers": 2, "num_attention_heads": 2, "weight_tying": False, "mask_token_id": 39,
        "transformers_version": "4.46.2", "auto_map": {
            "AutoConfig": "configuration_tiny_llada_v4.TinyLLaDAV4Config",
            "AutoModel": "modeling_tiny_llada_v4.TinyLLaDAV4"}}))
    return out
