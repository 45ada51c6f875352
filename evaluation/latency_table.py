"""Latency as an objective: a plan's prefill latency predicted from a table of measured module
timings (ZipLM's and EvoPress's latency tables), and the search objective that weighs it in.

Scoring thousands of candidates cannot afford a pruned copy of the model and a timed forward pass
for each (at 70B a copy does not even fit beside the dense model), so each module kind is timed once
per width it can take on the run's device, in the model's dtype, on one prefill of `seqlen` tokens:

    attention(h query heads, g KV heads)   q/k/v/o projections, rotary, causal SDPA (GQA)
    mlp(c channels)                        gate/up/down projections and SiLU
    per layer                              two RMSNorms and the residual adds (width-independent)

A plan's latency is the sum over its layers plus the per-layer constants; its ratio to the dense
model's is what the search sees. Widths: every attention width a layer can keep; MLP widths at up to
`MLP_POINTS` unit counts, interpolated in between; each timing is the median of `repeats` (CUDA
synchronised on a GPU, wall clock on CPU), then made non-decreasing in the width so that timing noise
never makes a wider module look faster. The table is written into the run folder
(`latency_table.json`) and a resumed run reads it back, so every score of a run uses the same table.

The objective (`--latency-weight W`): fitness x (latency(plan) / latency(uniform plan))^W. W = 0 is
the plain fitness (no table is measured); W = 1 trades 1% of fitness for 1% of latency; the uniform
plan of the same budget is the reference, so a plan as fast as uniform keeps its fitness.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from evaluation.timing import _clock

MLP_POINTS = 24  # MLP widths timed (evenly spread over the unit counts; the rest interpolated)
# Weights streamed per timed pass: a module timed alone keeps its weights in the CPU's cache, which
# the model's forward pass (every layer's weights in turn) never does; timed alone, the MLP of
# SmolLM2-135M at 65% width looked 80% as slow as at full width, in the model it is 60% as slow.
# So each pass runs over several copies of the module's weights, together at least this many bytes
# (one copy where a copy alone is larger: a 70B layer's).
STREAMED_BYTES = 64 * 2**20  # above the last-level cache of the CPUs we run on (32 MB per EPYC CCX)


class LatencyTable:
    """Measured module timings of one model shape on one device; `ratio(space, plan)`."""

    def __init__(self, attention: dict[tuple[int, int], float], mlp: dict[int, float], per_layer: float, meta: dict):
        self.attention, self.mlp, self.per_layer, self.meta = attention, mlp, per_layer, meta
        self._widths = sorted(mlp)
        self._dense: float | None = None  # the dense model's seconds: one shape per table (its meta)

    # -- prediction --------------------------------------------------------------------------------
    def mlp_seconds(self, channels: int) -> float:
        if channels in self.mlp:
            return self.mlp[channels]
        widths = self._widths
        if channels <= widths[0]:
            return self.mlp[widths[0]] * channels / widths[0]
        upper = next((w for w in widths if w > channels), widths[-1])
        lower = max(w for w in widths if w < channels)
        share = (channels - lower) / (upper - lower)
        return self.mlp[lower] + share * (self.mlp[upper] - self.mlp[lower])

    def seconds(self, space, plan) -> float:
        """Predicted prefill seconds of the decoder blocks of `plan` (a PruningPlan)."""
        total = 0.0
        for i, layer_plan in enumerate(plan.layers):
            shape = space.layer_shape_after(i, layer_plan)
            total += self.per_layer + self.attention[(shape.num_attention_heads, shape.num_key_value_heads)]
            total += self.mlp_seconds(shape.intermediate_size)
        return total

    def ratio(self, space, plan) -> float:
        """Predicted latency of `plan` over the dense model's (lower is faster)."""
        if self._dense is None:
            from pruning.genome import PruningPlan

            self._dense = self.seconds(space, PruningPlan.keep_all(space.num_layers))
        return self.seconds(space, plan) / self._dense

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"attention": [[h, g, s] for (h, g), s in sorted(self.attention.items())],
                "mlp": [[c, s] for c, s in sorted(self.mlp.items())], "per_layer": self.per_layer, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyTable":
        return cls({(int(h), int(g)): float(s) for h, g, s in data["attention"]},
                   {int(c): float(s) for c, s in data["mlp"]}, float(data["per_layer"]), dict(data.get("meta", {})))

    @classmethod
    def load_or_measure(cls, path: Path, space, device: torch.device, dtype: torch.dtype, seqlen: int = 512,
                        repeats: int = 5, status=None) -> "LatencyTable":
        """The run folder's table when it matches this shape, device and dtype; else measured and written."""
        meta = _meta(space, device, dtype, seqlen)
        if path.exists():
            table = cls.from_dict(json.loads(path.read_text()))
            if all(table.meta.get(k) == v for k, v in meta.items()):
                return table
        if status:
            status(f"timing attention and MLP widths on {meta['device']} for the latency objective")
        table = measure(space, device, dtype, seqlen, repeats)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(table.to_dict(), indent=1))
        tmp.replace(path)
        return table


class LatencyObjective:
    """fitness x (latency(plan) / latency(reference))^weight; `reference`: the uniform plan."""

    def __init__(self, table: LatencyTable, space, reference, weight: float):
        self.table, self.space, self.weight = table, space, weight
        self.reference = table.ratio(space, reference)

    def latency(self, plan) -> float:
        return self.table.ratio(self.space, plan)

    def score(self, plan, fitness: float) -> tuple[float, float]:
        """(objective, predicted latency over dense)."""
        latency = self.latency(plan)
        if not math.isfinite(fitness):
            return fitness, latency
        return fitness * (latency / self.reference) ** self.weight, latency

    def describe(self) -> str:
        return (f"fitness x (predicted prefill latency / the uniform plan's)^{self.weight:g}; uniform = "
                f"{self.reference:.3f} of dense ({self.table.meta.get('device')}, {self.table.meta.get('seqlen')} tokens)")


# -- measurement -----------------------------------------------------------------------------------
def _meta(space, device: torch.device, dtype: torch.dtype, seqlen: int) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    shape = space.shape
    return {"method": 2, "device": name, "dtype": str(dtype).replace("torch.", ""), "seqlen": seqlen, "hidden": shape.hidden_size,
            "head_dim": shape.head_dim, "layers": [[s.num_attention_heads, s.num_key_value_heads, s.intermediate_size]
                                                   for s in shape.layers], "mlp_unit": space.mlp_unit}


@torch.inference_mode()
def measure(space, device: torch.device, dtype: torch.dtype, seqlen: int = 512, repeats: int = 5) -> LatencyTable:
    from pruning.genome import LayerPlan

    shape, gen = space.shape, torch.Generator().manual_seed(0)
    hidden, head_dim = shape.hidden_size, shape.head_dim
    x = (torch.randn(1, seqlen, hidden, generator=gen) * 0.5).to(device=device, dtype=dtype)

    def weight(rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=gen) * 0.02).to(device=device, dtype=dtype)

    clock = _clock(device, [device] if device.type == "cuda" else [])
    attention: dict[tuple[int, int], float] = {}
    mlp: dict[int, float] = {}
    for i in range(space.num_layers):
        for units in range(1, space.attn_units(i) + 1):
            kept = space.layer_shape_after(i, LayerPlan(space.attn_units(i) - units, 0))
            key = (kept.num_attention_heads, kept.num_key_value_heads)
            if key not in attention:
                attention[key] = _seconds(clock, lambda: _attention_pass(x, weight, *key, head_dim),
                                          (2 * key[0] + 2 * key[1]) * head_dim * hidden * x.element_size(), repeats)
        counts = space.mlp_units(i)
        points = sorted({1, counts} | {round(1 + k * (counts - 1) / (MLP_POINTS - 1)) for k in range(MLP_POINTS)})
        for units in points:
            channels = units * space.mlp_unit
            if channels not in mlp:
                mlp[channels] = _seconds(clock, lambda: _mlp_pass(x, weight, channels),
                                         3 * channels * hidden * x.element_size(), repeats)
    per_layer = _seconds(clock, lambda: _norms_pass(x), STREAMED_BYTES, repeats)  # no weights: one copy
    return LatencyTable(_monotone(attention), _monotone(mlp), per_layer, _meta(space, device, dtype, seqlen))


def _seconds(clock, make, weight_bytes: int, repeats: int) -> float:
    """Median seconds of one pass made by `make()`, timed over enough copies of it to stream
    STREAMED_BYTES of weights per timed run (one copy where one alone is larger), after a warm-up."""
    copies = max(1, min(64, STREAMED_BYTES // max(weight_bytes, 1)))
    passes = [make() for _ in range(copies)]

    def run():
        for one in passes:
            one()
    run()  # warm-up: kernels chosen, allocations made
    return statistics.median(clock(run) for _ in range(repeats)) / copies


def _attention_pass(x, weight, heads: int, kv_heads: int, head_dim: int):
    hidden, seqlen = x.shape[-1], x.shape[1]
    wq, wk, wv, wo = weight(heads * head_dim, hidden), weight(kv_heads * head_dim, hidden), \
        weight(kv_heads * head_dim, hidden), weight(hidden, heads * head_dim)
    cos = torch.ones(seqlen, head_dim, dtype=x.dtype, device=x.device)
    sin = torch.zeros_like(cos)

    def rotary(t):
        half = t.shape[-1] // 2
        return t * cos + torch.cat((-t[..., half:], t[..., :half]), dim=-1) * sin

    def run():
        q = F.linear(x, wq).view(1, seqlen, heads, head_dim).transpose(1, 2)
        k = F.linear(x, wk).view(1, seqlen, kv_heads, head_dim).transpose(1, 2)
        v = F.linear(x, wv).view(1, seqlen, kv_heads, head_dim).transpose(1, 2)
        q, k = rotary(q), rotary(k)
        if heads != kv_heads:  # GQA as the model runs it: KV heads repeated for their query heads
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.linear(out.transpose(1, 2).reshape(1, seqlen, heads * head_dim), wo)
    return run


def _mlp_pass(x, weight, channels: int):
    hidden = x.shape[-1]
    gate, up, down = weight(channels, hidden), weight(channels, hidden), weight(hidden, channels)
    return lambda: F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def _norms_pass(x):
    scale = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)

    def norm(t):
        return t * torch.rsqrt(t.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(t.dtype) * scale

    return lambda: (norm(x) + x, norm(x) + x)


def _monotone(table: dict) -> dict:
    """Non-decreasing in the width (noise never makes a wider module look faster)."""
    out, best = {}, 0.0
    for key in sorted(table):  # widths, or (query heads, KV heads)
        best = max(best, table[key])
        out[key] = best
    return out
