"""Decoder LMs with per-layer head counts and MLP widths, built from each family's own modules.

Copied verbatim into every pruned checkpoint. Each decoder layer is the family's own class
(`LlamaDecoderLayer`, `Gemma3DecoderLayer`, ...) constructed with a `LayerConfig`: the shared
config with that layer's head counts and MLP width laid over it. The forward passes are
transformers' own (attention reshapes with `-1` heads and repeats KV by `num_key_value_groups`,
so smaller layers run unchanged, GQA, q/k norms, sliding windows and scaled embeddings included).
"""
from torch import nn
from transformers.models.gemma3.modeling_gemma3 import Gemma3DecoderLayer, Gemma3ForCausalLM, Gemma3TextModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from transformers.models.mistral.modeling_mistral import MistralDecoderLayer, MistralForCausalLM, MistralModel
from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer, Phi3ForCausalLM, Phi3Model
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2ForCausalLM, Qwen2Model
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3ForCausalLM, Qwen3Model

from .configuration_pruned import (
    PrunedGemma3TextConfig,
    PrunedLlamaConfig,
    PrunedMistralConfig,
    PrunedPhi3Config,
    PrunedQwen2Config,
    PrunedQwen3Config,
)


class LayerConfig:
    """One layer's view of the model config: its own sizes, everything else read live from the
    shared config (so a later `_attn_implementation` change reaches every layer)."""

    def __init__(self, shared, **sizes):
        object.__setattr__(self, "_shared", shared)
        object.__setattr__(self, "_sizes", sizes)

    def __getattr__(self, key):
        if key.startswith("__") or key in ("_shared", "_sizes"):
            raise AttributeError(key)
        sizes = object.__getattribute__(self, "_sizes")
        return sizes[key] if key in sizes else getattr(object.__getattribute__(self, "_shared"), key)

    def __setattr__(self, key, value):
        raise AttributeError(f"a layer's config is read-only (set {key} on the model config)")


def _with_bias(linear: nn.Linear, bias: bool) -> nn.Linear:
    if (linear.bias is not None) == bias:
        return linear
    return nn.Linear(linear.in_features, linear.out_features, bias=bias, device=linear.weight.device,
                     dtype=linear.weight.dtype)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def pruned_layer(layer_class, config, layer_idx: int):
    geometry = config.layer_geometry(layer_idx)
    view = LayerConfig(config, num_attention_heads=geometry["num_attention_heads"],
                       num_key_value_heads=geometry["num_key_value_heads"],
                       intermediate_size=geometry["intermediate_size"], head_dim=_head_dim(config),
                       attention_bias=config.qkv_bias, mlp_bias=config.gate_up_bias)
    layer = layer_class(view, layer_idx)
    # FLAP's bias compensation puts a bias on o_proj / down_proj of some layers only.
    layer.self_attn.o_proj = _with_bias(layer.self_attn.o_proj, geometry["o_proj_bias"])
    layer.mlp.down_proj = _with_bias(layer.mlp.down_proj, geometry["down_proj_bias"])
    return layer


def _built_without_layers(construct, config) -> None:
    """Run a family's constructor with no decoder layers (ours replace them): no dense-size
    layer is ever allocated."""
    layers = config.num_hidden_layers
    object.__setattr__(config, "num_hidden_layers", 0)
    try:
        construct(config)
    finally:
        object.__setattr__(config, "num_hidden_layers", layers)


def _init_model(self, family_model, layer_class, config) -> None:
    _built_without_layers(lambda c: family_model.__init__(self, c), config)
    self.layers = nn.ModuleList([pruned_layer(layer_class, config, i) for i in range(config.num_hidden_layers)])
    self.post_init()


def _init_causal_lm(self, family_lm, model_class, config) -> None:
    _built_without_layers(lambda c: family_lm.__init__(self, c), config)
    self.model = model_class(config)
    self.post_init()


class PrunedLlamaModel(LlamaModel):
    config_class = PrunedLlamaConfig

    def __init__(self, config):
        _init_model(self, LlamaModel, LlamaDecoderLayer, config)


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    config_class = PrunedLlamaConfig

    def __init__(self, config):
        _init_causal_lm(self, LlamaForCausalLM, PrunedLlamaModel, config)


class PrunedMistralModel(MistralModel):
    config_class = PrunedMistralConfig

    def __init__(self, config):
        _init_model(self, MistralModel, MistralDecoderLayer, config)


class PrunedMistralForCausalLM(MistralForCausalLM):
    config_class = PrunedMistralConfig

    def __init__(self, config):
        _init_causal_lm(self, MistralForCausalLM, PrunedMistralModel, config)


class PrunedQwen2Model(Qwen2Model):
    config_class = PrunedQwen2Config

    def __init__(self, config):
        _init_model(self, Qwen2Model, Qwen2DecoderLayer, config)


class PrunedQwen2ForCausalLM(Qwen2ForCausalLM):
    config_class = PrunedQwen2Config

    def __init__(self, config):
        _init_causal_lm(self, Qwen2ForCausalLM, PrunedQwen2Model, config)


class PrunedQwen3Model(Qwen3Model):
    config_class = PrunedQwen3Config

    def __init__(self, config):
        _init_model(self, Qwen3Model, Qwen3DecoderLayer, config)


class PrunedQwen3ForCausalLM(Qwen3ForCausalLM):
    config_class = PrunedQwen3Config

    def __init__(self, config):
        _init_causal_lm(self, Qwen3ForCausalLM, PrunedQwen3Model, config)


class PrunedGemma3TextModel(Gemma3TextModel):
    config_class = PrunedGemma3TextConfig

    def __init__(self, config):
        _init_model(self, Gemma3TextModel, Gemma3DecoderLayer, config)


class PrunedGemma3ForCausalLM(Gemma3ForCausalLM):
    config_class = PrunedGemma3TextConfig

    def __init__(self, config):
        _init_causal_lm(self, Gemma3ForCausalLM, PrunedGemma3TextModel, config)


class PrunedPhi3Model(Phi3Model):
    config_class = PrunedPhi3Config

    def __init__(self, config):
        _init_model(self, Phi3Model, Phi3DecoderLayer, config)


class PrunedPhi3ForCausalLM(Phi3ForCausalLM):
    config_class = PrunedPhi3Config

    def __init__(self, config):
        _init_causal_lm(self, Phi3ForCausalLM, PrunedPhi3Model, config)


__all__ = ["PrunedLlamaForCausalLM", "PrunedMistralForCausalLM", "PrunedQwen2ForCausalLM", "PrunedQwen3ForCausalLM",
           "PrunedGemma3ForCausalLM", "PrunedPhi3ForCausalLM"]
