"""Architecture adapter: names the parts of a LLaMA-family decoder layer.

LLaMA, Mistral, Qwen2 (and our own pruned checkpoints) share one layout:
`model.model.layers[i].self_attn.{q,k,v,o}_proj` and `.mlp.{gate,up,down}_proj`. The adapter
is the only place that knows those names, so another family with the same math needs a new
`LayerNames`, not new pruning code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruning.shape import LayerShape, ModelShape

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "pruned_llama")


class UnsupportedModelError(ValueError):
    pass


@dataclass(frozen=True)
class LayerNames:
    attention: str = "self_attn"
    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    mlp: str = "mlp"
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"


class DecoderAdapter:
    """Uniform access to a LLaMA-family causal LM's decoder layers and their shapes."""

    def __init__(self, model: nn.Module, names: LayerNames = LayerNames()):
        model_type = getattr(model.config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        self.model = model
        self.config = model.config
        self.names = names

    # -- modules ---------------------------------------------------------------------------
    @property
    def decoder(self) -> nn.Module:
        return self.model.model

    @property
    def layers(self) -> nn.ModuleList:
        return self.decoder.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def attention(self, i: int) -> nn.Module:
        return getattr(self.layers[i], self.names.attention)

    def mlp(self, i: int) -> nn.Module:
        return getattr(self.layers[i], self.names.mlp)

    def q_proj(self, i: int) -> nn.Linear:
        return getattr(self.attention(i), self.names.q)

    def k_proj(self, i: int) -> nn.Linear:
        return getattr(self.attention(i), self.names.k)

    def v_proj(self, i: int) -> nn.Linear:
        return getattr(self.attention(i), self.names.v)

    def o_proj(self, i: int) -> nn.Linear:
        return getattr(self.attention(i), self.names.o)

    def gate_proj(self, i: int) -> nn.Linear:
        return getattr(self.mlp(i), self.names.gate)

    def up_proj(self, i: int) -> nn.Linear:
        return getattr(self.mlp(i), self.names.up)

    def down_proj(self, i: int) -> nn.Linear:
        return getattr(self.mlp(i), self.names.down)

    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    # -- shape -----------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        cfg = self.config
        return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def layer_shape(self, i: int) -> LayerShape:
        """Read from the real weight shapes, so an already pruned model reports its true shape."""
        d = self.head_dim
        o, down = self.o_proj(i), self.down_proj(i)
        return LayerShape(
            num_attention_heads=self.q_proj(i).out_features // d,
            num_key_value_heads=self.k_proj(i).out_features // d,
            intermediate_size=self.gate_proj(i).out_features,
            o_proj_bias=o.bias is not None,
            down_proj_bias=down.bias is not None,
        )

    def shape(self) -> ModelShape:
        cfg = self.config
        return ModelShape(
            hidden_size=cfg.hidden_size,
            head_dim=self.head_dim,
            vocab_size=cfg.vocab_size,
            tie_word_embeddings=_embeddings_tied(self.model),
            layers=tuple(self.layer_shape(i) for i in range(self.num_layers)),
            qkv_bias=self.q_proj(0).bias is not None,
            gate_up_bias=self.gate_proj(0).bias is not None,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _embeddings_tied(model: nn.Module) -> bool:
    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    if head is None:
        return True
    if head.weight is embed.weight:
        return True
    if "meta" in (head.weight.device.type, embed.weight.device.type):
        # meta tensors (a config-only model, offloaded weights) all report data_ptr 0: ask the config
        return bool(getattr(model.config, "tie_word_embeddings", False))
    return head.weight.data_ptr() == embed.weight.data_ptr()
