"""Apply a pruning selection to the dense model with hooks: no weight copies.

A removed head is a set of o_proj input columns; a removed channel is a down_proj input column.
Zeroing those inputs is exactly what slicing them out does (masked == sliced, tested), and costs
one elementwise multiply per layer, so a masked fitness evaluation runs at dense speed.
FLAP's compensation bias is added to the o_proj / down_proj outputs. A re-fitted projection
(pruning/reconstruction.py) stands in for the dense one by a pointer swap: `RefitLinear` reads
only the kept input columns with the new weights, and the dense module is put back afterwards.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager

import torch

import torch.nn.functional as F
from torch import nn

from pruning.adapter import DecoderAdapter
from pruning.placement import execution_device
from pruning.reconstruction import LayerRefit, ProjectionRefit
from pruning.selection import LayerSelection, column_indices


class RefitLinear(nn.Module):
    """A re-fitted o_proj / down_proj in place of the dense one: y = W' x[kept] + b'.

    Its tensors are plain attributes, neither parameters nor buffers, so that accelerate's offload
    hooks (which move a module's registered tensors to and from `meta`) never touch them."""

    def __init__(self, refit: ProjectionRefit, device, dtype):
        super().__init__()
        self.kept = refit.kept.to(device)
        self.w = refit.weight.to(device=device, dtype=dtype)
        self.b = refit.bias.to(device=device, dtype=dtype)

    def forward(self, x):
        return F.linear(x.index_select(-1, self.kept), self.w, self.b)


def _parent(adapter: DecoderAdapter, i: int, path: str) -> tuple[nn.Module, str]:
    owner, _, name = path.rpartition(".")
    return (adapter.module(i, owner) if owner else adapter.layers[i]), name


@contextmanager
def refit_swapped(model, i: int, refit: LayerRefit):
    """Layer i's o_proj / down_proj replaced by their refits within the block."""
    adapter = DecoderAdapter(model)
    swaps = []
    try:
        for path, projection in ((adapter.family.o, refit.o_proj), (adapter.family.down, refit.down_proj)):
            if projection is None:
                continue
            parent, name = _parent(adapter, i, path)
            dense = getattr(parent, name)
            setattr(parent, name, RefitLinear(projection, execution_device(dense), _dtype(dense)))
            swaps.append((parent, name, dense))
        yield
    finally:
        for parent, name, dense in reversed(swaps):
            setattr(parent, name, dense)


def _dtype(linear: nn.Module) -> torch.dtype:
    return next((p.dtype for p in linear.parameters()), torch.float32)


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
def masked(model, selections: list[LayerSelection], biases=None, refits: list[LayerRefit] | None = None):
    """Within the block, `model` behaves as if pruned by `selections` (and compensated by `biases`,
    or re-fitted by `refits`: a refit replaces that projection's mask)."""
    adapter = DecoderAdapter(model)
    head_dim = adapter.head_dim
    handles = []
    with ExitStack() as stack:
        stack.callback(lambda: [handle.remove() for handle in handles])
        for i, sel in enumerate(selections):
            refit = refits[i] if refits else LayerRefit()
            stack.enter_context(refit_swapped(model, i, refit))
            if sel.removes_heads and refit.o_proj is None:
                mask = torch.zeros(sel.num_heads * head_dim)
                mask[column_indices(sel.kept_heads, head_dim)] = 1.0
                handles.append(adapter.o_proj(i).register_forward_pre_hook(_input_mask_hook(mask)))
            if sel.removes_channels and refit.down_proj is None:
                mask = torch.zeros(sel.num_channels)
                mask[sel.kept_channels] = 1.0
                handles.append(adapter.down_proj(i).register_forward_pre_hook(_input_mask_hook(mask)))
            o_bias, down_bias = biases[i] if biases else (None, None)
            if o_bias is not None:
                handles.append(adapter.o_proj(i).register_forward_hook(_output_bias_hook(o_bias)))
            if down_bias is not None:
                handles.append(adapter.down_proj(i).register_forward_hook(_output_bias_hook(down_bias)))
        yield model
