"""Architecture adapter: the parts of a decoder layer, named by its family's table.

`pruning/families.py` declares, per family, where q/k/v/o, gate/up/down and the norms live (and
which projections are fused). The adapter is the one place that turns those names into modules
and row ranges, so the pruning code never names a weight itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruning.families import Family, family_of
from pruning.shape import LayerShape, ModelShape


@dataclass(frozen=True)
class RowBlock:
    """Rows [start, stop) of a linear: a whole projection, or one part of a fused one."""
    linear: nn.Linear
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight[self.start:self.stop]


class DecoderAdapter:
    """Uniform access to a decoder-only causal LM's layers and their shapes."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.family: Family = family_of(getattr(model.config, "model_type", None))

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

    def module(self, i: int, path: str) -> nn.Module:
        return self.layers[i].get_submodule(path)

    def o_proj(self, i: int) -> nn.Linear:
        return self.module(i, self.family.o)

    def down_proj(self, i: int) -> nn.Linear:
        return self.module(i, self.family.down)

    def attn_input(self, i: int) -> nn.Linear:
        """The first linear that reads the attention's input (q, or the fused qkv)."""
        return self.module(i, self.family.qkv or self.family.q)

    def mlp_input(self, i: int) -> nn.Linear:
        return self.module(i, self.family.gate_up or self.family.gate)

    def rows(self, i: int, part: str) -> RowBlock:
        """Rows of q, k, v, o, gate, up or down in layer i (a slice of the fused linear where fused)."""
        f = self.family
        if part in ("q", "k", "v") and f.qkv:
            heads, kv = self._fused_heads(i)
            d = self.head_dim
            start = {"q": 0, "k": heads * d, "v": (heads + kv) * d}[part]
            return RowBlock(self.module(i, f.qkv), start, start + (heads if part == "q" else kv) * d)
        if part in ("gate", "up") and f.gate_up:
            linear = self.module(i, f.gate_up)
            half = linear.out_features // 2
            return RowBlock(linear, 0 if part == "gate" else half, half if part == "gate" else 2 * half)
        linear = self.module(i, getattr(f, part))
        return RowBlock(linear, 0, linear.out_features)

    def _fused_heads(self, i: int) -> tuple[int, int]:
        """A fused qkv's rows do not tell q from kv heads: the config does (per layer once pruned)."""
        cfg = self.config
        if getattr(cfg, "layer_num_attention_heads", None) is not None:
            geometry = cfg.layer_geometry(i)
            return geometry["num_attention_heads"], geometry["num_key_value_heads"]
        return cfg.num_attention_heads, cfg.num_key_value_heads

    def norm_names(self) -> tuple[str, ...]:
        return self.family.layer_norms + self.family.head_norms

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
            num_attention_heads=self.rows(i, "q").rows // d,
            num_key_value_heads=self.rows(i, "k").rows // d,
            intermediate_size=self.rows(i, "gate").rows,
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
            qkv_bias=self.rows(0, "q").linear.bias is not None,
            gate_up_bias=self.rows(0, "gate").linear.bias is not None,
            layer_norms=len(self.family.layer_norms),
            head_norms=len(self.family.head_norms),
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
