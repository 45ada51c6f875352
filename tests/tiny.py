"""A tiny random GQA Llama built in memory: 4 layers, 8 query heads, 2 KV heads."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(seed: int = 0, tie: bool = False, heads: int = 8, kv_heads: int = 2, layers: int = 4,
               attention_bias: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=8, max_position_embeddings=128,
        tie_word_embeddings=tie, attention_bias=attention_bias, rms_norm_eps=1e-5,
    )
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).eval()
    # Random init gives near-identical heads; spread weights so importance orderings differ.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(torch.rand_like(p) * 3.0)
    return model


def tiny_inputs(n: int = 3, seqlen: int = 16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 128, (n, seqlen), generator=generator)
