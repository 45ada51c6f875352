"""Calibration windows streamed through the decoder one layer at a time.

A sequential pass (reconstruction, Hessian-aware selection) must finish layer i on *every*
calibration window before layer i+1 sees any: layer i+1 is measured on what the pruned layer i
produces. So the hidden states of all windows are kept at the current layer's input (64 x 512
tokens: 37 MB at hidden 576, 0.5 GB at hidden 8192 in bf16) and each layer is run on them in
turn, never the whole model (one pass costs about one forward, not one per layer).

Each layer is called exactly as the family's own model calls it: the keyword arguments (rotary
position embeddings, attention masks, Gemma-3's per-layer-type masks and embeddings) are
recorded once per batch size from a real forward of the decoder, and the layer-0 inputs come
from the embeddings (Gemma's scaling included) by stopping the decoder at layer 0.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from pruning.adapter import DecoderAdapter
from pruning.data import TokenWindows
from pruning.placement import input_device


class _Stop(Exception):
    """Raised by a hook to end a forward early (nothing after the hook is needed)."""


def _detached(value):
    if torch.is_tensor(value):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


class LayerStream:
    """The windows' hidden states at the input of layer `position`, and a way to run any layer on them."""

    def __init__(self, model, windows: TokenWindows, batch_size: int = 4):
        self.model = model
        self.adapter = DecoderAdapter(model)
        self.batch_size = batch_size
        ids = windows.input_ids
        self.batches = [ids[s : s + batch_size] for s in range(0, ids.shape[0], batch_size)]
        self._kwargs: dict[int, list[dict]] = {}  # batch size -> per-layer keyword arguments
        self.hidden: list[torch.Tensor] = [self._layer0_input(batch) for batch in self.batches]
        self.position = 0
        self.tokens = int(ids.numel())

    @torch.no_grad()
    def _layer0_input(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] not in self._kwargs:
            self._record_kwargs(batch)
        captured = {}

        def stop(_module, args, kwargs):
            captured["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach()
            raise _Stop

        handle = self.adapter.layers[0].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.adapter.decoder(input_ids=batch.to(input_device(self.model)), use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured["hidden"]

    def _record_kwargs(self, batch: torch.Tensor) -> None:
        """One real forward of the decoder, recording how it calls each layer (minus the hidden states)."""
        per_layer: list[dict] = [{} for _ in range(self.adapter.num_layers)]

        def recorder(i):
            def hook(_module, args, kwargs):
                recorded = {k: _detached(v) for k, v in kwargs.items() if k != "hidden_states"}
                recorded["_extra_args"] = tuple(_detached(a) for a in args[1:])
                per_layer[i] = recorded

            return hook

        handles = [layer.register_forward_pre_hook(recorder(i), with_kwargs=True)
                   for i, layer in enumerate(self.adapter.layers)]
        try:
            self.adapter.decoder(input_ids=batch.to(input_device(self.model)), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        self._kwargs[batch.shape[0]] = per_layer

    def fork(self) -> "LayerStream":
        """A second stream at the same layer with its own copy of the hidden states (the dense
        model's stream beside the pruned one)."""
        twin = object.__new__(LayerStream)
        twin.__dict__.update(self.__dict__)
        twin.hidden = [h.clone() for h in self.hidden]
        return twin

    def call_layer(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        kwargs = dict(self._kwargs[hidden.shape[0]][i])
        extra = kwargs.pop("_extra_args")
        out = self.adapter.layers[i](hidden, *extra, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    @torch.no_grad()
    def run(self, i: int, advance: bool = False) -> None:
        """Layer i on every window (hooks on its modules observe it); advance: its outputs become
        the stored hidden states (the stream moves to layer i + 1)."""
        if i != self.position:
            raise RuntimeError(f"the stream is at layer {self.position}, not {i}")
        for k, hidden in enumerate(self.hidden):
            out = self.call_layer(i, hidden)
            if advance:
                self.hidden[k] = out.detach()
        if advance:
            self.position += 1

    @torch.no_grad()
    def observe(self, i: int, module: torch.nn.Module, sink, stop_after: bool = True) -> None:
        """Call `sink(x, y, k)` with the input and output of `module` (a linear inside layer i) for
        every batch k of windows; the rest of the layer is skipped where that is safe (no accelerate
        hook that would be left holding offloaded weights)."""
        stop = stop_after and not _has_hooks(self.adapter.layers[i])
        batch = [0]

        def hook(_module, args, output):
            sink(args[0], output, batch[0])
            if stop:
                raise _Stop

        handle = module.register_forward_hook(hook)
        try:
            for k, hidden in enumerate(self.hidden):
                batch[0] = k
                try:
                    self.call_layer(i, hidden)
                except _Stop:
                    pass
        finally:
            handle.remove()

    @torch.no_grad()
    def outputs(self, i: int, modules: list[torch.nn.Module], advance: bool = True) -> list[list[torch.Tensor]]:
        """Per module, its output on every batch while layer i runs (kept in CPU RAM when the layer
        computes on a GPU); advance: the stream moves on to layer i + 1."""
        captured: list[list[torch.Tensor]] = [[] for _ in modules]

        def keeper(j):
            def hook(_module, _args, output):
                captured[j].append(output.detach().to("cpu") if output.is_cuda else output.detach())
            return hook

        handles = [m.register_forward_hook(keeper(j)) for j, m in enumerate(modules)]
        try:
            self.run(i, advance=advance)
        finally:
            for handle in handles:
                handle.remove()
        return captured


def _has_hooks(module: torch.nn.Module) -> bool:
    return any(getattr(m, "_hf_hook", None) is not None for m in module.modules())


@contextmanager
def swapped(parent: torch.nn.Module, name: str, replacement: torch.nn.Module):
    """`parent.name` is `replacement` within the block (a pointer swap; the original is untouched)."""
    original = getattr(parent, name)
    setattr(parent, name, replacement)
    try:
        yield original
    finally:
        setattr(parent, name, original)
