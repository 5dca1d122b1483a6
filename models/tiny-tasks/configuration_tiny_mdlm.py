"""Configuration of the tiny MDLM: a LLaDA-shaped bidirectional transformer, small enough for CPU.

This file is self-contained (it imports only `transformers`) because it is copied next to the
weights of every saved checkpoint, the way LLaDA and Dream ship their modeling code, so that the
checkpoint also loads with plain transformers and `trust_remote_code=True`.
"""

from transformers import PretrainedConfig


class TinyMDLMConfig(PretrainedConfig):
    model_type = "tiny_mdlm"

    def __init__(
        self,
        vocab_size: int = 64,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 344,
        max_position_embeddings: int = 128,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        mask_token_id: int | None = None,
        pad_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs,
    ):
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({hidden_size}) must be divisible by "
                f"`num_attention_heads` ({num_attention_heads})"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.mask_token_id = mask_token_id
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, **kwargs)
