"""Export to the DeciLM / nemotron-nas `block_configs` layout that vLLM, SGLang, TensorRT-LLM
and llama.cpp serve (RESEARCH.md 2.10).

That format fixes the number of *query* heads globally (`num_kv_heads = num_attention_heads //
n_heads_in_group` per layer), so it can express per-layer MLP widths but not our attention
pruning: removing query heads (query mode) or whole KV groups (which takes their query heads
along) both change the query-head count. Only plans that leave attention untouched export.
Weights keep Llama names; widths go in `ffn.intermediate_size` (vLLM uses it when `ffn_mult` is
absent), so any MLP width is exact. Compensation biases need the format's global bias flags, so
zero biases are written where a layer has none.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pruning.adapter import DecoderAdapter
from pruning.genome import PruningPlan
from pruning.space import PruningSpace


def decilm_expressible(space: PruningSpace, plan: PruningPlan) -> bool:
    return all(layer.attn_units_removed == 0 for layer in plan.layers)


def decilm_config(pruned_model) -> dict:
    adapter = DecoderAdapter(pruned_model)
    shape = adapter.shape()
    dense = pruned_model.config
    n_heads = dense.num_attention_heads
    blocks = []
    for layer in shape.layers:
        if layer.num_attention_heads != n_heads:
            raise ValueError("DeciLM export needs every layer to keep all query heads")
        blocks.append({
            "attention": {"no_op": False, "replace_with_linear": False,
                          "n_heads_in_group": n_heads // layer.num_key_value_heads},
            "ffn": {"no_op": False, "replace_with_linear": False, "intermediate_size": layer.intermediate_size},
        })
    any_o_bias = any(layer.o_proj_bias for layer in shape.layers)
    any_down_bias = any(layer.down_proj_bias for layer in shape.layers)
    return {
        "architectures": ["DeciLMForCausalLM"],
        "model_type": "nemotron-nas",
        "hidden_size": dense.hidden_size,
        "num_hidden_layers": len(blocks),
        "num_attention_heads": n_heads,
        "num_key_value_heads": dense.num_key_value_heads,
        "head_dim": adapter.head_dim,
        "intermediate_size": max(layer.intermediate_size for layer in shape.layers),
        "vocab_size": dense.vocab_size,
        "hidden_act": dense.hidden_act,
        "rms_norm_eps": dense.rms_norm_eps,
        "max_position_embeddings": dense.max_position_embeddings,
        "rope_parameters": dict(dense.rope_parameters) if dense.rope_parameters else None,
        "rope_theta": (dense.rope_parameters or {}).get("rope_theta", 10000.0),
        "tie_word_embeddings": shape.tie_word_embeddings,
        "attention_bias": any_o_bias or shape.qkv_bias,
        "qkv_bias": shape.qkv_bias,
        "mlp_bias": any_down_bias or shape.gate_up_bias,
        "bos_token_id": dense.bos_token_id,
        "eos_token_id": dense.eos_token_id,
        "block_configs": blocks,
        "torch_dtype": str(adapter.decoder.embed_tokens.weight.dtype).replace("torch.", ""),
    }


def decilm_state_dict(pruned_model, config: dict) -> dict[str, torch.Tensor]:
    """Llama-named tensors, with zero biases filling in where the global flags demand one."""
    state = {k: v.detach() for k, v in pruned_model.state_dict().items()}
    if config["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    adapter = DecoderAdapter(pruned_model)
    for i in range(adapter.num_layers):
        prefix = f"model.layers.{i}."
        needed = []
        if config["attention_bias"]:
            needed.append(("self_attn.o_proj", adapter.o_proj(i)))
            if config["qkv_bias"]:
                needed += [("self_attn.q_proj", adapter.q_proj(i)), ("self_attn.k_proj", adapter.k_proj(i)),
                           ("self_attn.v_proj", adapter.v_proj(i))]
        if config["mlp_bias"]:
            needed += [("mlp.gate_proj", adapter.gate_proj(i)), ("mlp.up_proj", adapter.up_proj(i)),
                       ("mlp.down_proj", adapter.down_proj(i))]
        for name, linear in needed:
            key = prefix + name + ".bias"
            if key not in state:
                state[key] = torch.zeros(linear.out_features, dtype=linear.weight.dtype)  # tiny: no need to offload
    return state


def export_decilm(pruned_model, tokenizer, out_dir: str | Path, record: dict) -> Path:
    """Sharded like the checkpoint (5 GB); offloaded weights are read shard by shard."""
    from transformers.integrations.accelerate import load_offloaded_parameter

    from pruning.checkpoint import save_sharded

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = decilm_config(pruned_model)
    save_sharded(decilm_state_dict(pruned_model, config), out,
                 resolve=lambda name: load_offloaded_parameter(pruned_model, name))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / "pruning.json").write_text(json.dumps(record, indent=2))
    return out
