"""Importance of attention heads and MLP channels, from one calibration pass.

One forward pass over calibration windows records, per decoder layer, the mean and mean square
of the inputs of q_proj (or a fused qkv), o_proj, gate_proj (or gate_up) and down_proj
(`ActivationStats`). Every metric is
then arithmetic on those statistics and the weights, so the expensive pass is cached on disk
once per (model, data, samples, seqlen) and shared by all metrics:

* wanda-sp  : |W| * sqrt(E[x^2]) on o_proj / down_proj input columns, averaged over output rows
              (FLAP's `prune_wanda_sp`); a head's score sums its head_dim columns.
* flap      : fluctuation Var[x_j] * ||W[:, j]||^2 (FLAP's WIFV); bias compensation uses E[x].
* magnitude : ||W[:, j]||_1, no activations (a weak control).
* obs       : Hessian-aware (pruning/obs.py): the greedy order of what a least-squares refit makes up
              for best, from the Gram matrices of the reference pass (pruning/refit_table.py).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pruning.adapter import DecoderAdapter
from pruning.data import TokenWindows
from pruning.placement import input_device, materialized

METRICS = ("wanda-sp", "flap", "magnitude", "obs")  # obs: pruning/obs.py, from the reference pass
OBS_PENDING = "obs (pending the reference pass)"  # the metric's name until its scores exist
SITES = ("attn_in", "attn_heads", "mlp_in", "mlp_hidden")  # inputs of q, o, gate, down
STAT_ROWS = 256  # token rows converted to float64 at once by the statistics hooks


@dataclass
class SiteStats:
    sum: torch.Tensor  # float64, per input column
    sumsq: torch.Tensor
    count: int

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    @property
    def mean_square(self) -> torch.Tensor:
        return self.sumsq / max(self.count, 1)

    @property
    def variance(self) -> torch.Tensor:
        # Unbiased, as FLAP; clamp the tiny negatives that cancellation can leave.
        n = max(self.count, 2)
        return ((self.sumsq - self.sum**2 / n) / (n - 1)).clamp_min(0.0)


@dataclass
class ActivationStats:
    layers: list[dict[str, SiteStats]]
    tokens: int

    def to_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "layers": [{k: (v.sum, v.sumsq, v.count) for k, v in layer.items()} for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ActivationStats":
        layers = [{k: SiteStats(*v) for k, v in layer.items()} for layer in data["layers"]]
        return cls(layers=layers, tokens=data["tokens"])


@torch.inference_mode()
def collect_activation_stats(
    model,
    windows: TokenWindows,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> ActivationStats:
    adapter = DecoderAdapter(model)
    accum: list[dict[str, list]] = [{} for _ in range(adapter.num_layers)]

    scratch: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def float64_scratch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.device, x.shape[-1])
        if key not in scratch:
            scratch[key] = (torch.empty(STAT_ROWS, x.shape[-1], dtype=torch.float64, device=x.device),
                            torch.empty(x.shape[-1], dtype=torch.float64, device=x.device))
        return scratch[key]

    def make_hook(layer_idx: int, site: str):
        def hook(_module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            # float64 sums of STAT_ROWS rows at a time, through one reused buffer per width: the
            # hooks allocate nothing batch-sized. A float64 copy of a whole batch (67 MB at
            # 4 x 512 x 4096, made by `x.sum(dtype=float64)` on CPU) freed and re-made at every
            # hook fragments glibc's heap: the CPU process grew by 0.2-2.5 GB during calibration.
            # Bit-identical to x.sum(0, dtype=float64) and (x64 * x64).sum(0), checked in fp32,
            # bf16 and fp16 for 100-8192 rows (torch's cascade sum adds 256-row blocks in order).
            buffer, row_sum = float64_scratch(x)
            total = torch.zeros(x.shape[-1], dtype=torch.float64, device=x.device)
            squares = torch.zeros_like(total)
            for start in range(0, x.shape[0], STAT_ROWS):
                part = buffer[: min(STAT_ROWS, x.shape[0] - start)]
                part.copy_(x[start : start + part.shape[0]])
                total += torch.sum(part, 0, out=row_sum)
                squares += torch.sum(part.mul_(part), 0, out=row_sum)
            slot = accum[layer_idx].get(site)
            if slot is None:
                accum[layer_idx][site] = [total, squares, x.shape[0]]
            else:
                slot[0] += total
                slot[1] += squares
                slot[2] += x.shape[0]

        return hook

    handles = []
    for i in range(adapter.num_layers):
        for site, module in zip(SITES, (adapter.attn_input(i), adapter.o_proj(i), adapter.mlp_input(i), adapter.down_proj(i))):
            handles.append(module.register_forward_pre_hook(make_hook(i, site)))
    device = input_device(model)
    ids = windows.input_ids
    try:
        for start in range(0, ids.shape[0], batch_size):
            # The decoder alone: the LM head's logits are not needed for statistics.
            adapter.decoder(input_ids=ids[start : start + batch_size].to(device), use_cache=False)
            if progress:
                progress(min(start + batch_size, ids.shape[0]), ids.shape[0])
    finally:
        for handle in handles:
            handle.remove()
    layers = [{site: SiteStats(*(t.cpu() if torch.is_tensor(t) else t for t in slot)) for site, slot in layer.items()} for layer in accum]
    return ActivationStats(layers=layers, tokens=int(ids.numel()))


@dataclass
class LayerImportance:
    head_scores: torch.Tensor  # (num_attention_heads,) higher = keep
    channel_scores: torch.Tensor  # (intermediate_size,)
    head_input_mean: torch.Tensor  # E[x] of o_proj input (num_heads * head_dim,), for bias compensation
    channel_input_mean: torch.Tensor  # E[x] of down_proj input (intermediate_size,)


@dataclass
class ImportanceScores:
    metric: str
    layers: list[LayerImportance]


ROW_CHUNK = 4096  # output rows scored at once: bounds the fp32 temporary (8192 x 4096 x 4 B = 128 MiB)


@torch.no_grad()
def _column_scores(weight: torch.Tensor, stats: SiteStats, metric: str) -> torch.Tensor:
    """Per input column, on the weight's own device (GPU when there is one), in fp32."""
    if metric not in METRICS or metric == "obs":
        raise ValueError(f"unknown importance metric {metric!r}; use one of {', '.join(METRICS)}")
    device = weight.device
    total = torch.zeros(weight.shape[1], dtype=torch.float32, device=device)
    for start in range(0, weight.shape[0], ROW_CHUNK):
        w = weight[start : start + ROW_CHUNK].detach().float()
        total += (w.pow(2) if metric == "flap" else w.abs()).sum(dim=0)  # ||W_j||^2, else ||W_j||_1
    if metric == "wanda-sp":
        return (total / weight.shape[0] * stats.mean_square.to(device=device, dtype=torch.float32).sqrt()).cpu()
    if metric == "flap":
        return (stats.variance.to(device=device, dtype=torch.float32) * total).cpu()
    return total.cpu()


def compute_importance(model, stats: ActivationStats, metric: str) -> ImportanceScores:
    """Scores from the statistics alone. `obs` starts as Wanda-sp's scores, named pending: selecting
    with them is refused until the reference pass replaces them (PruningContext.prepare_table)."""
    if metric not in METRICS:
        raise ValueError(f"unknown importance metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric == "obs":
        return ImportanceScores(OBS_PENDING, compute_importance(model, stats, "wanda-sp").layers)
    adapter = DecoderAdapter(model)
    d = adapter.head_dim
    layers = []
    for i in range(adapter.num_layers):
        site = stats.layers[i]
        o_proj, down_proj = adapter.o_proj(i), adapter.down_proj(i)
        with materialized(o_proj, down_proj):  # offloaded weights come in one layer at a time
            head_cols = _column_scores(o_proj.weight, site["attn_heads"], metric)
            channel_scores = _column_scores(down_proj.weight, site["mlp_hidden"], metric)
        layers.append(
            LayerImportance(
                head_scores=head_cols.view(-1, d).sum(dim=1),
                channel_scores=channel_scores,
                head_input_mean=site["attn_heads"].mean.float(),
                channel_input_mean=site["mlp_hidden"].mean.float(),
            )
        )
    return ImportanceScores(metric=metric, layers=layers)


def wanda_outlier_ratios(model, stats: ActivationStats, threshold: float = 5.0) -> list[float]:
    """OWL's layer outlier ratio: share of Wanda scores |W_ij| * ||x_j|| above `threshold` x mean.

    Over all seven linears of a block, as OWL does (one ratio per transformer block).
    """
    adapter = DecoderAdapter(model)
    ratios = []
    for i in range(adapter.num_layers):
        site = stats.layers[i]
        sites = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "o": "attn_heads", "gate": "mlp_in", "up": "mlp_in",
                 "down": "mlp_hidden"}
        metrics = []
        for part, s in sites.items():
            block = adapter.rows(i, part)  # the part's rows, inside a fused linear where fused
            with materialized(block.linear):
                w = block.weight.detach()
                metrics.append((w.float().abs() * site[s].mean_square.to(w.device, torch.float32).sqrt()).flatten().cpu())
        flat = torch.cat(metrics)
        ratios.append(float((flat > threshold * flat.mean()).float().mean()))
    return ratios


# -- the on-disk cache -------------------------------------------------------------------------

def model_fingerprint(model) -> str:
    """Identity of the weights: name, shape and a checksum of a few tensors (cheap, order-safe)."""
    adapter = DecoderAdapter(model)
    h = hashlib.sha256()
    h.update(str(getattr(model.config, "_name_or_path", "")).encode())
    h.update(repr(adapter.shape()).encode())
    for linear in (adapter.attn_input(0), adapter.down_proj(adapter.num_layers - 1)):
        with materialized(linear):  # an offloaded weight is on meta outside its forward
            h.update(f"{linear.weight.detach().float().sum().item():.6e}".encode())
    return h.hexdigest()[:16]


def stats_cache_key(model, data_source: str, samples: int, seqlen: int, seed: int) -> str:
    payload = json.dumps([model_fingerprint(model), data_source, samples, seqlen, seed, 1])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_or_collect_stats(model, windows: TokenWindows, cache_dir: Path | None, key: str, batch_size: int = 4,
                          progress=None) -> tuple[ActivationStats, bool]:
    """Return (stats, came_from_cache)."""
    path = Path(cache_dir) / f"activation-stats-{key}.pt" if cache_dir else None
    if path and path.exists():
        return ActivationStats.from_dict(torch.load(path, weights_only=True)), True
    stats = collect_activation_stats(model, windows, batch_size=batch_size, progress=progress)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(stats.to_dict(), tmp)
        tmp.replace(path)
    return stats, False


def layer_importance(scores: ImportanceScores) -> list[tuple[float, float]]:
    """Per layer (attention, MLP) importance, each normalised to mean 1 across layers: the
    facts the initializer is given about where redundancy lies."""
    attn = torch.tensor([float(layer.head_scores.sum()) for layer in scores.layers])
    mlp = torch.tensor([float(layer.channel_scores.sum()) for layer in scores.layers])
    attn = attn / attn.mean().clamp_min(1e-12)
    mlp = mlp / mlp.mean().clamp_min(1e-12)
    return [(float(a), float(m)) for a, m in zip(attn, mlp)]
