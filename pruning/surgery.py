"""Physical pruning: a smaller `PrunedLlamaForCausalLM` with sliced weights.

The new model is built on the meta device (no random init, no memory), then its parameters are
assigned slices of the dense weights; untouched tensors (embeddings, norms, LM head) are shared
with the dense model rather than copied. Per-layer head counts go into the config, so GQA
attention (`num_key_value_groups`) is right in every layer.

Two ways: `prune_model` keeps the dense model (a sliced fitness evaluation on one device);
`prune_in_place` consumes it layer by layer, keeping its placement (GPUs, CPU, disk), so the
end of a run never holds two models.
"""
from __future__ import annotations

import copy
import gc

import torch

from pruning.adapter import DecoderAdapter
from pruning.placement import Placement, UnitWriter, is_dispatched, materialized, model_placement, unit_names, unit_sizes
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


def _layer_slices(adapter: DecoderAdapter, i: int, sel: LayerSelection, extra=(None, None)) -> dict[str, torch.Tensor]:
    """The pruned layer's tensors (names relative to the layer), sliced on the weights' device.
    Offloaded weights must be materialized by the caller."""
    d = adapter.head_dim
    q_rows = column_indices(sel.kept_heads, d)
    kv_rows = column_indices(sel.kept_kv_heads, d)
    channels = sel.kept_channels
    o_extra, down_extra = extra
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
    state: dict[str, torch.Tensor] = {}
    for name, (linear, rows, cols) in pieces.items():
        w = linear.weight.detach()
        if rows is not None:
            w = w.index_select(0, rows.to(w.device))
        if cols is not None:
            w = w.index_select(1, cols.to(w.device))
        state[name + ".weight"] = w
        bias = linear.bias
        if bias is not None and rows is not None:
            bias = bias.detach().index_select(0, rows.to(bias.device))
        if name == "self_attn.o_proj":
            bias = _plus(bias, o_extra, w)
        elif name == "mlp.down_proj":
            bias = _plus(bias, down_extra, w)
        if bias is not None:
            state[name + ".bias"] = bias
    state["input_layernorm.weight"] = layer.input_layernorm.weight.detach()
    state["post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight.detach()
    return state


def _skeleton(model, shape: ModelShape) -> PrunedLlamaForCausalLM:
    """The pruned model on meta: the right shapes, no memory."""
    config = pruned_config(model.config, shape)
    config._attn_implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    with torch.device("meta"):
        pruned = PrunedLlamaForCausalLM(config)
    pruned.generation_config = copy.deepcopy(model.generation_config)
    return pruned


@torch.no_grad()
def prune_model(model, selections: list[LayerSelection], shape: ModelShape, biases=None) -> PrunedLlamaForCausalLM:
    """A new, physically smaller model beside the dense one (untouched tensors shared). For a
    model on one device (sliced fitness evaluations); finalize uses `prune_in_place`."""
    adapter = DecoderAdapter(model)
    if is_dispatched(model):
        raise ValueError("prune_model copies the kept weights; a model spread over devices is pruned in place")
    state: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": adapter.decoder.embed_tokens.weight,
        "model.norm.weight": adapter.decoder.norm.weight,
    }
    if not shape.tie_word_embeddings:
        state["lm_head.weight"] = adapter.lm_head().weight
    for i, sel in enumerate(selections):
        for name, tensor in _layer_slices(adapter, i, sel, biases[i] if biases else (None, None)).items():
            state[f"model.layers.{i}.{name}"] = tensor
    pruned = _skeleton(model, shape)
    missing, unexpected = pruned.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (shape.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"surgery produced a state that does not fit: missing {missing[:4]}, unexpected {unexpected[:4]}")
    if shape.tie_word_embeddings:
        pruned.lm_head.weight = pruned.model.embed_tokens.weight
    # Non-persistent buffers (rotary inv_freq) were created on meta: take the dense model's.
    pruned.model.rotary_emb = copy.deepcopy(adapter.decoder.rotary_emb)
    pruned.config.dtype = adapter.decoder.embed_tokens.weight.dtype
    pruned.eval()
    return pruned


@torch.no_grad()
def prune_in_place(model, selections: list[LayerSelection], shape: ModelShape, biases=None,
                   offload_folder: str | None = None, progress=None) -> PrunedLlamaForCausalLM:
    """Turn the dense model into the pruned one layer by layer; the dense model is consumed.

    Each layer's kept rows and columns are sliced where its weights compute (offloaded ones are
    brought in for the slicing), the slices go where the dense layer lived (its GPU, CPU RAM, or
    the disk folder `offload_folder`), and the dense layer's tensors are freed before the next
    layer: peak memory is the dense model plus about one layer. The pruned model keeps the dense
    model's placement.
    """
    from accelerate.hooks import remove_hook_from_module

    adapter = DecoderAdapter(model)
    dtype = _dense_dtype(model)
    placement = model_placement(model) or Placement({u: _resident_device(model.get_submodule(u))
                                                     for u in unit_names(model)})
    pruned = _skeleton(model, shape)
    pruned_placement = Placement(dict(placement.device_map), offload_folder, unit_sizes(pruned, dtype))
    writer = UnitWriter(pruned, pruned_placement, offload_folder)
    units = unit_names(model)
    for k, unit in enumerate(units):
        module = model.get_submodule(unit)
        if unit == "lm_head" and shape.tie_word_embeddings:
            continue
        with materialized(*module.modules()):
            if unit.startswith("model.layers."):
                i = int(unit.rsplit(".", 1)[1])
                tensors = _layer_slices(adapter, i, selections[i], biases[i] if biases else (None, None))
            else:
                tensors = {n: p.detach() for n, p in module.named_parameters()}
            buffers = dict(module.named_buffers())
            writer.put(unit, tensors, buffers)
        del tensors
        if unit.startswith("model.layers."):
            _release_unit(model, unit)
        if progress:
            progress(k + 1, len(units))
    if shape.tie_word_embeddings:
        pruned.lm_head.weight = pruned.model.embed_tokens.weight
    remove_hook_from_module(model, recurse=True)
    for name in ("model.embed_tokens", "model.norm", "lm_head"):
        _release_unit(model, name)
    pruned.config.dtype = dtype
    pruned.eval()
    return writer.finish()


def _dense_dtype(model) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _resident_device(module):
    for tensor in module.parameters():
        if tensor.device.type != "meta":
            return tensor.device.index if tensor.device.type == "cuda" else "cpu"
    return "cpu"


def _release_unit(model, unit: str) -> None:
    """Free a dense unit: its module's tensors, and its entries in accelerate's CPU offload map."""
    parent_name, _, child = unit.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    module = getattr(parent, child) if not child.isdigit() else parent[int(child)]
    hooked = False
    for sub in module.modules():
        hook = getattr(sub, "_hf_hook", None)
        hooked |= hook is not None
        weights_map = getattr(hook, "weights_map", None)
        loader = getattr(weights_map, "dataset", None)
        state = getattr(loader, "state_dict", None)
        if isinstance(state, dict):
            for key in [k for k in state if k.startswith(unit + ".")]:
                del state[key]
    if child.isdigit():
        parent[int(child)] = torch.nn.Module()
    else:
        setattr(parent, child, torch.nn.Module())
    del module, sub
    if hooked:
        # accelerate's hooks make each module reference itself (module.forward -> closure -> module):
        # without a collection its tensors would wait for the cyclic GC (measured: +7.8 GiB on an H200)
        gc.collect()
