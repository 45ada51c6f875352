"""Which heads and channels a plan removes: the lowest-scoring ones, GQA-consistently.

Kept indices stay in their original order, so query heads remain grouped by KV head
(transformers' `repeat_kv` maps query head j to KV head j // queries_per_group).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pruning.genome import LayerPlan, PruningPlan
from pruning.importance import OBS_PENDING, ImportanceScores, LayerImportance
from pruning.space import PruningSpace


@dataclass(frozen=True)
class LayerSelection:
    kept_heads: torch.Tensor  # query head indices, sorted
    kept_kv_heads: torch.Tensor  # KV head indices, sorted
    kept_channels: torch.Tensor  # MLP channel indices, sorted
    num_heads: int  # dense counts, for masks
    num_channels: int

    @property
    def removes_heads(self) -> bool:
        return self.kept_heads.numel() < self.num_heads

    @property
    def removes_channels(self) -> bool:
        return self.kept_channels.numel() < self.num_channels


def select(plan: PruningPlan, scores: ImportanceScores, space: PruningSpace) -> list[LayerSelection]:
    if scores.metric == OBS_PENDING:
        raise ValueError("--metric obs scores come from the reference pass: prepare the refit table first")
    return [select_layer(i, layer_plan, scores.layers[i], space) for i, layer_plan in enumerate(plan.layers)]


def select_layer(i: int, layer_plan: LayerPlan, scores: LayerImportance, space: PruningSpace) -> LayerSelection:
    layer = space.shape.layers[i]
    head_scores = scores.head_scores.float()
    g, n_kv = layer.queries_per_group, layer.num_key_value_heads
    a = layer_plan.attn_units_removed
    if space.query_mode(layer):
        # Drop the a lowest-scoring query heads inside every KV group.
        per_group = head_scores.view(n_kv, g)
        order = per_group.argsort(dim=1, stable=True)[:, a:]
        kept = (order + torch.arange(n_kv).unsqueeze(1) * g).flatten().sort().values
        kept_kv = torch.arange(n_kv)
    else:
        # Drop the a KV groups whose query heads score lowest in total.
        group_scores = head_scores.view(n_kv, g).sum(dim=1)
        kept_kv = group_scores.argsort(stable=True)[a:].sort().values
        kept = (kept_kv.unsqueeze(1) * g + torch.arange(g)).flatten()
    n_remove = layer_plan.mlp_units_removed * space.mlp_unit
    channel_scores = scores.channel_scores.float()
    kept_channels = channel_scores.argsort(stable=True)[n_remove:].sort().values
    return LayerSelection(kept, kept_kv, kept_channels, layer.num_attention_heads, layer.intermediate_size)


def compensation_biases(model, selections: list[LayerSelection], scores: ImportanceScores, head_dim: int):
    """FLAP's baseline bias: what the removed inputs contributed on average, W[:, removed] @ E[x].

    Returns per layer (o_proj_bias or None, down_proj_bias or None), in fp32.
    """
    from pruning.adapter import DecoderAdapter
    from pruning.placement import materialized

    adapter = DecoderAdapter(model)
    biases = []
    for i, sel in enumerate(selections):
        o_bias = down_bias = None
        if sel.removes_heads:
            removed = _removed_columns(sel.kept_heads, sel.num_heads, head_dim)
            with materialized(adapter.o_proj(i)):
                w = adapter.o_proj(i).weight.detach()
                mean = scores.layers[i].head_input_mean.to(w.device)
                o_bias = w[:, removed.to(w.device)].float() @ mean[removed.to(w.device)]
        if sel.removes_channels:
            removed = _removed_columns(sel.kept_channels, sel.num_channels, 1)
            with materialized(adapter.down_proj(i)):
                w = adapter.down_proj(i).weight.detach()
                mean = scores.layers[i].channel_input_mean.to(w.device)
                down_bias = w[:, removed.to(w.device)].float() @ mean[removed.to(w.device)]
        biases.append((o_bias, down_bias))
    return biases


def column_indices(kept_units: torch.Tensor, width: int) -> torch.Tensor:
    """Expand unit indices (heads) to column indices (head_dim columns each)."""
    return (kept_units.unsqueeze(1) * width + torch.arange(width)).flatten()


def _removed_columns(kept_units: torch.Tensor, num_units: int, width: int) -> torch.Tensor:
    keep = torch.zeros(num_units, dtype=torch.bool)
    keep[kept_units] = True
    return column_indices(torch.nonzero(~keep).flatten(), width)
