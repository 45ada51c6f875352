"""Apply a pruning selection to the dense model with hooks: no weight copies.

A removed head is a set of o_proj input columns; a removed channel is a down_proj input column.
Zeroing those inputs is exactly what slicing them out does (masked == sliced, tested), and costs
one elementwise multiply per layer, so a masked fitness evaluation runs at dense speed.
FLAP's compensation bias is added to the o_proj / down_proj outputs.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from pruning.adapter import DecoderAdapter
from pruning.selection import LayerSelection, column_indices


def _input_mask_hook(mask: torch.Tensor):
    cache: dict = {}

    def hook(_module, args):
        x = args[0]
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = mask.to(device=x.device, dtype=x.dtype)
        return (x * cache[key],) + tuple(args[1:])

    return hook


def _output_bias_hook(bias: torch.Tensor):
    cache: dict = {}

    def hook(_module, _args, output):
        key = (output.device, output.dtype)
        if key not in cache:
            cache[key] = bias.to(device=output.device, dtype=output.dtype)
        return output + cache[key]

    return hook


@contextmanager
def masked(model, selections: list[LayerSelection], biases=None):
    """Within the block, `model` behaves as if pruned by `selections` (and compensated by `biases`)."""
    adapter = DecoderAdapter(model)
    head_dim = adapter.head_dim
    handles = []
    try:
        for i, sel in enumerate(selections):
            if sel.removes_heads:
                mask = torch.zeros(sel.num_heads * head_dim)
                mask[column_indices(sel.kept_heads, head_dim)] = 1.0
                handles.append(adapter.o_proj(i).register_forward_pre_hook(_input_mask_hook(mask)))
            if sel.removes_channels:
                mask = torch.zeros(sel.num_channels)
                mask[sel.kept_channels] = 1.0
                handles.append(adapter.down_proj(i).register_forward_pre_hook(_input_mask_hook(mask)))
            o_bias, down_bias = biases[i] if biases else (None, None)
            if o_bias is not None:
                handles.append(adapter.o_proj(i).register_forward_hook(_output_bias_hook(o_bias)))
            if down_bias is not None:
                handles.append(adapter.down_proj(i).register_forward_hook(_output_bias_hook(down_bias)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
