"""LLaDA-8B-like shapes for `selection_overhead.py --simulate llada`: step states of random
tensors (batch, canvas 512, hidden 4096, block 32) and a random-weight bf16 model of LLaDA-8B's
shape for the base forward."""

from __future__ import annotations

import torch

from depmask.decoding import StepState
from depmask.models import HFDenoiser

SIM_TOKENS = 64  # the simulated states' candidates are drawn among the first token ids


def simulated_states(args, device, n: int) -> list[StepState]:
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    b, l, d, c = args.batch, args.sim_length, args.sim_hidden, args.sim_block
    s = l - args.sim_gen  # the first block of the answer
    states = []
    for i in range(n):
        mask = torch.zeros(b, l, dtype=torch.bool)
        mask[:, s : s + c] = torch.rand(b, c, generator=g) < 1.0 - i / (n + 1)  # blocks empty over steps
        mask[:, s] = True
        probs = torch.rand(b, l, SIM_TOKENS, generator=g).pow(6).softmax(-1)  # peaked: a mix of confidences
        conf, x0 = probs.max(-1)
        attn = (torch.randn(b, l, l, generator=g) * 2).softmax(-1)
        states.append(StepState(
            tokens=torch.where(mask, 0, x0).to(device), mask=mask.to(device), x0=x0.to(device),
            confidence=conf.double().to(device), entropy=(-(probs * probs.log()).sum(-1)).double().to(device),
            margin=torch.zeros(b, l, dtype=torch.float64, device=device), step=i, steps_per_block=c, block=0,
            block_start=s, block_end=s + c, block_masked=mask.sum(1).to(device),
            hidden=torch.randn(b, l, d, generator=g, dtype=torch.bfloat16).to(device), attention=attn.to(device),
            raw_confidence=conf.double().to(device),  # its own tensor, as the loop's states have
        ))
    return states


def llada_shaped(args, device) -> HFDenoiser:
    from depmask.models.tiny_mdlm import TinyMDLMConfig, TinyMDLMForMaskedLM

    cfg = TinyMDLMConfig(
        vocab_size=args.sim_vocab, hidden_size=args.sim_hidden, num_hidden_layers=args.sim_layers,
        num_attention_heads=args.sim_heads, intermediate_size=args.sim_intermediate,
        max_position_embeddings=args.sim_length, mask_token_id=args.sim_vocab - 1, pad_token_id=0, eos_token_id=1,
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = TinyMDLMForMaskedLM(cfg).eval()
    finally:
        torch.set_default_dtype(default)
    return HFDenoiser(model)
