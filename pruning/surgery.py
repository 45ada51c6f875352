"""Physical pruning: a new, smaller `PrunedLlamaForCausalLM` with sliced weights.

The new model is built on the meta device (no random init, no memory), then its parameters are
assigned slices of the dense weights; untouched tensors (embeddings, norms, LM head) are shared
with the dense model rather than copied. Per-layer head counts go into the config, so GQA
attention (`num_key_value_groups`) is right in every layer.
"""
from __future__ import annotations

import copy

import torch

from pruning.adapter import DecoderAdapter
from pruning.hf_modeling import PrunedLlamaConfig, PrunedLlamaForCausalLM
from pruning.selection import LayerSelection, column_indices
from pruning.shape import ModelShape


def pruned_config(dense_config, shape: ModelShape) -> PrunedLlamaConfig:
    """A PrunedLlamaConfig carrying the dense config's fields plus per-layer sizes."""
    fields = dense_config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version", "quantization_config",
                "sliding_window", "use_sliding_window", "max_window_layers", "layer_types"):
        fields.pop(key, None)
    known = set(PrunedLlamaConfig.__dataclass_fields__) if hasattr(PrunedLlamaConfig, "__dataclass_fields__") else None
    if known is not None:
        fields = {k: v for k, v in fields.items() if k in known or k.startswith("_") or k in ("dtype",)}
    fields.update(
        head_dim=shape.head_dim,
        num_hidden_layers=shape.num_layers,
        layer_num_attention_heads=[layer.num_attention_heads for layer in shape.layers],
        layer_num_key_value_heads=[layer.num_key_value_heads for layer in shape.layers],
        layer_intermediate_size=[layer.intermediate_size for layer in shape.layers],
        layer_o_proj_bias=[layer.o_proj_bias for layer in shape.layers],
        layer_down_proj_bias=[layer.down_proj_bias for layer in shape.layers],
        qkv_bias=shape.qkv_bias,
        gate_up_bias=shape.gate_up_bias,
        tie_word_embeddings=shape.tie_word_embeddings,
        attention_bias=False,
        mlp_bias=False,
    )
    config = PrunedLlamaConfig(**fields)
    config.architectures = ["PrunedLlamaForCausalLM"]
    config.auto_map = {
        "AutoConfig": "configuration_pruned_llama.PrunedLlamaConfig",
        "AutoModelForCausalLM": "modeling_pruned_llama.PrunedLlamaForCausalLM",
    }
    return config


def _plus(bias: torch.Tensor | None, extra: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if extra is None:
        return None if bias is None else bias.detach()
    extra = extra.to(device=like.device, dtype=like.dtype)
    return extra if bias is None else bias.detach() + extra


@torch.no_grad()
def prune_model(model, selections: list[LayerSelection], shape: ModelShape, biases=None) -> PrunedLlamaForCausalLM:
    """Return the physically pruned model; `shape` is `space.pruned_shape(plan)`."""
    adapter = DecoderAdapter(model)
    d = adapter.head_dim
    config = pruned_config(model.config, shape)
    config._attn_implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    state: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": adapter.decoder.embed_tokens.weight,
        "model.norm.weight": adapter.decoder.norm.weight,
    }
    if not shape.tie_word_embeddings:
        state["lm_head.weight"] = adapter.lm_head().weight
    for i, sel in enumerate(selections):
        prefix = f"model.layers.{i}."
        q_rows = column_indices(sel.kept_heads, d)
        kv_rows = column_indices(sel.kept_kv_heads, d)
        channels = sel.kept_channels
        o_extra, down_extra = biases[i] if biases else (None, None)
        layer = adapter.layers[i]
        pieces = {
            "self_attn.q_proj": (adapter.q_proj(i), q_rows, None),
            "self_attn.k_proj": (adapter.k_proj(i), kv_rows, None),
            "self_attn.v_proj": (adapter.v_proj(i), kv_rows, None),
            "self_attn.o_proj": (adapter.o_proj(i), None, q_rows),
            "mlp.gate_proj": (adapter.gate_proj(i), channels, None),
            "mlp.up_proj": (adapter.up_proj(i), channels, None),
            "mlp.down_proj": (adapter.down_proj(i), None, channels),
        }
        for name, (linear, rows, cols) in pieces.items():
            w = linear.weight
            if rows is not None:
                w = w.index_select(0, rows.to(w.device))
            if cols is not None:
                w = w.index_select(1, cols.to(w.device))
            state[prefix + name + ".weight"] = w
            bias = linear.bias
            if bias is not None and rows is not None:
                bias = bias.index_select(0, rows.to(bias.device))
            if name == "self_attn.o_proj":
                bias = _plus(bias, o_extra, w)
            elif name == "mlp.down_proj":
                bias = _plus(bias, down_extra, w)
            if bias is not None:
                state[prefix + name + ".bias"] = bias
        state[prefix + "input_layernorm.weight"] = layer.input_layernorm.weight
        state[prefix + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight

    with torch.device("meta"):
        pruned = PrunedLlamaForCausalLM(config)
    missing, unexpected = pruned.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (shape.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"surgery produced a state that does not fit: missing {missing[:4]}, unexpected {unexpected[:4]}")
    if shape.tie_word_embeddings:
        pruned.lm_head.weight = pruned.model.embed_tokens.weight
    # Non-persistent buffers (rotary inv_freq) were created on meta: take the dense model's.
    pruned.model.rotary_emb = copy.deepcopy(adapter.decoder.rotary_emb)
    pruned.generation_config = copy.deepcopy(model.generation_config)
    pruned.config.dtype = adapter.decoder.embed_tokens.weight.dtype
    pruned.eval()
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(device_map.values())) > 1:
        from accelerate import dispatch_model

        pruned = dispatch_model(pruned, device_map=device_map)
    return pruned
