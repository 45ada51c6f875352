"""The shape of a decoder (any family in pruning/families.py) and exact parameter counting.

A `ModelShape` is everything needed to count parameters without touching weights: the
search prices thousands of genomes, so counting must be arithmetic, not `numel()`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LayerShape:
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    # Biases added by FLAP's bias compensation live on o_proj / down_proj.
    o_proj_bias: bool = False
    down_proj_bias: bool = False

    @property
    def queries_per_group(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    layers: tuple[LayerShape, ...]
    qkv_bias: bool = False  # bias on q/k/v (Qwen2, or Llama with attention_bias)
    gate_up_bias: bool = False  # bias on gate/up (Llama with mlp_bias)
    layer_norms: int = 2  # norms over hidden per layer (Gemma-3: 4), families.py
    head_norms: int = 0  # norms over head_dim per layer (Qwen3, Gemma-3: q_norm, k_norm)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def attention_params(self, layer: LayerShape) -> int:
        h, d = self.hidden_size, self.head_dim
        q = h * layer.num_attention_heads * d
        kv = 2 * h * layer.num_key_value_heads * d
        o = layer.num_attention_heads * d * h
        bias = 0
        if self.qkv_bias:
            bias += (layer.num_attention_heads + 2 * layer.num_key_value_heads) * d
        if layer.o_proj_bias:
            bias += h
        return q + kv + o + bias

    def mlp_params(self, layer: LayerShape) -> int:
        h, c = self.hidden_size, layer.intermediate_size
        bias = (2 * c if self.gate_up_bias else 0) + (h if layer.down_proj_bias else 0)
        return 3 * h * c + bias

    def layer_params(self, layer: LayerShape) -> int:
        """One decoder block: attention + MLP + its norms (which pruning never shrinks)."""
        norms = self.layer_norms * self.hidden_size + self.head_norms * self.head_dim
        return self.attention_params(layer) + self.mlp_params(layer) + norms

    def block_params(self) -> int:
        """All decoder blocks together (what pruning can shrink)."""
        return sum(self.layer_params(layer) for layer in self.layers)

    def embedding_params(self) -> int:
        """Token embedding, untied LM head, final norm: untouched by pruning."""
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + head + self.hidden_size

    def total_params(self) -> int:
        return self.embedding_params() + self.block_params()

    def with_layers(self, layers: list[LayerShape] | tuple[LayerShape, ...]) -> "ModelShape":
        return replace(self, layers=tuple(layers))
