"""The exact sequential refit of one plan: every pruned layer re-fitted to what the pruned model
really feeds it.

Layer by layer, in order, over the calibration windows streamed at the layer's input
(pruning/layer_stream.py), with every earlier layer already pruned and re-fitted:
1. o_proj's inputs and dense outputs give (A, C) for the kept heads; o_proj is re-fitted and
   swapped in;
2. down_proj's inputs and dense outputs are then measured *behind the re-fitted attention*;
   down_proj is re-fitted and swapped in;
3. the layer, now pruned and re-fitted, moves the windows on to the next layer's input.
The dense weights are never written: the refits are returned (and swapped in by pointer only while
the layer runs), so the same model serves the next plan. Memory: one layer's statistics and the
windows' hidden states; one forward's worth of compute plus about 1.5 layer-forwards per layer.
Calibrating on the *dense* model's inputs instead is what Týr-the-Pruner's ablation shows failing
(538 vs 58 PPL at 50%); `sequential=False` exists to measure that (tests, benchmarks).

What the refit reproduces (`target`): `local`, the dense projection applied to these (pruned)
inputs, W x; or `dense`, what the dense model's projection outputs at this point of the dense
model's own forward, so each refit also makes up for what earlier layers lost (one more dense
layer-forward per layer, and a dense stream of hidden states beside the pruned one). Measured on
SmolLM2-135M at rate 0.35, uniform: test PPL 64.1 local vs 147.8 dense (sublayer outputs matched to
the dense model's while the residual stream beside them is not); `local` is what runs.
"""
from __future__ import annotations

from typing import Callable

import torch

from pruning.adapter import DecoderAdapter
from pruning.data import TokenWindows
from pruning.layer_stream import LayerStream
from pruning.masking import refit_swapped
from pruning.placement import execution_device, materialized
from pruning.reconstruction import TARGETS, KeptStatistics, LayerRefit, solve_refit
from pruning.selection import LayerSelection, column_indices


class SequentialRefit:
    """Re-fits layer after layer; call `layer(i)` for i = 0, 1, ... (or `all()`)."""

    def __init__(self, model, selections: list[LayerSelection], windows: TokenWindows, damping: float,
                 batch_size: int = 4, sequential: bool = True, target: str = "local"):
        if target not in TARGETS:
            raise ValueError(f"reconstruction target must be one of {', '.join(TARGETS)}, not {target!r}")
        self.model = model
        self.adapter = DecoderAdapter(model)
        self.selections = selections
        self.damping = damping
        self.sequential = sequential
        self.stream = LayerStream(model, windows, batch_size)
        self.parking = PinnedParking()
        # target "dense": a second stream runs the dense model alongside, and its projections' outputs are what
        # the refits reproduce (so a layer also makes up for what the pruned layers before it lost)
        self.dense = self.stream.fork() if target == "dense" else None

    def layer(self, i: int) -> LayerRefit:
        sel = self.selections[i]
        refit = LayerRefit()
        o, down = self.adapter.o_proj(i), self.adapter.down_proj(i)
        targets = self.dense.outputs(i, [o, down]) if self.dense is not None else (None, None)
        if sel.removes_heads:
            kept = column_indices(sel.kept_heads, self.adapter.head_dim)
            refit.o_proj = self._refit(i, o, kept, LayerRefit(), targets[0])
        if sel.removes_channels:
            refit.down_proj = self._refit(i, down, sel.kept_channels, refit, targets[1])
        if self.sequential:  # the pruned, re-fitted layer moves the windows on
            with refit_swapped(self.model, i, refit):
                self.stream.run(i, advance=True)
        else:  # the ablation: the dense layer does, so every layer is measured on dense inputs
            self.stream.run(i, advance=True)
        return refit

    def _refit(self, i: int, projection, kept: torch.Tensor, behind: LayerRefit, targets=None):
        """Re-fit one projection of layer i, measured with `behind` (the layer's refits so far) in
        place; targets: per batch, what its output should be (default: the dense projection's own
        output on these inputs)."""
        statistics = KeptStatistics(kept)

        def sink(x, y, k):
            statistics.add(x, y if targets is None else targets[k])

        with refit_swapped(self.model, i, behind):
            self.stream.observe(i, projection, sink)
        with materialized(projection):
            dtype = projection.weight.dtype
        device = execution_device(projection)
        a, c = statistics.finish()  # handed over: the statistics keep no reference
        if a.is_cuda:  # A and C wait in CPU RAM while the GPU holds the fp64 factor (1.5 GiB at 70B), not beside it
            a, c = self.parking.park("a", a), self.parking.park("c", c)
        return solve_refit(a, c, kept, self.damping, device=device, dtype=dtype)

    def all(self, progress: Callable[[int, int], None] | None = None) -> list[LayerRefit]:
        refits = []
        for i in range(self.adapter.num_layers):
            refits.append(self.layer(i))
            if progress:
                progress(i + 1, self.adapter.num_layers)
        return refits


class PinnedParking:
    """Page-locked CPU buffers, reused from layer to layer, where a GPU refit's fp32 statistics wait
    while the solve holds the fp64 system (page-locked: the copies run at PCIe speed; reused: pinning
    1.2 GB anew for every layer at 70B would cost more than the copies)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def park(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A CPU copy of `tensor` in buffer `name` (valid until that name is parked again)."""
        buffer = self.buffers.get(name)
        if buffer is None or buffer.dtype != tensor.dtype or buffer.numel() < tensor.numel():
            self.buffers.pop(name, None)
            buffer = self.buffers[name] = torch.empty(tensor.numel(), dtype=tensor.dtype, pin_memory=True)
        view = buffer[: tensor.numel()].view(tensor.shape)
        view.copy_(tensor)
        return view
