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


FAMILY_NAMES = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3")


def tiny_family_model(family: str, seed: int = 0, tie: bool = False):
    """The tiny geometry (4 layers, 8 query heads over 2 KV heads, head_dim 8) in another family's
    classes, with what makes that family different switched on: Qwen2's q/k/v biases, Qwen3's and
    Gemma-3's q/k norms, Gemma-3's sliding-window layers and scaled embeddings, Mistral's sliding
    window, Phi-3's fused projections."""
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig, MistralForCausalLM, Phi3Config,
                              Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

    if family == "llama":
        return tiny_llama(seed=seed, tie=tie)
    torch.manual_seed(seed)
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tie, rms_norm_eps=1e-5,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config, cls = {
        "mistral": (lambda: MistralConfig(**common, head_dim=8, sliding_window=8), MistralForCausalLM),
        "qwen2": (lambda: Qwen2Config(**common), Qwen2ForCausalLM),
        "qwen3": (lambda: Qwen3Config(**common, head_dim=8), Qwen3ForCausalLM),
        "gemma3": (lambda: Gemma3TextConfig(**common, head_dim=8, sliding_window=8, query_pre_attn_scalar=8,
                                            layer_types=["sliding_attention", "full_attention"] * 2), Gemma3ForCausalLM),
        "phi3": (lambda: Phi3Config(**common), Phi3ForCausalLM),
    }[family]
    config = config()
    config._attn_implementation = "eager"
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(torch.rand_like(p) * 3.0)
            elif "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)  # non-trivial norms and biases, so copying them is checked
    return model
