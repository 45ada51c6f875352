"""Per-layer allocations without search: uniform, OWL-style, FLAP's global adaptive structure, and
LLM-Pruner's layer range (the first and last layers left whole).

Each returns a genome; `repair` then puts it exactly on the budget, so every allocation is
compared at the same realised parameter count.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pruning.budget import Budget
from pruning.genome import Genome, LayerPlan, PruningPlan
from pruning.importance import ImportanceScores
from pruning.space import PruningSpace

ALLOCATIONS = ("uniform", "owl", "flap", "llm-pruner")


def uniform(space: PruningSpace, budget: Budget, granularity: str = "layer") -> Genome:
    return Genome.uniform(granularity, space.num_layers, budget.average_rate)


def protected_layers(num_layers: int) -> list[int]:
    """LLM-Pruner's range, scaled: on LLaMA-7B it prunes layers 4-30 of 32, leaving the first eighth
    and the last thirty-second whole (the first layers are where removal costs most)."""
    first, last = -(-num_layers // 8), -(-num_layers // 32)
    return list(range(first)) + list(range(num_layers - last, num_layers))


def llm_pruner(space: PruningSpace, budget: Budget) -> Genome:
    """The protected layers at rate 0, the others evenly at what the budget then needs (at most the
    rate bound; `repair` settles the rest)."""
    n, kept = space.num_layers, set(protected_layers(space.num_layers))
    rate = min(space.max_rate, budget.average_rate * n / (n - len(kept)))
    return Genome("layer", tuple(0.0 if i in kept else rate for i in range(n)))


def owl(space: PruningSpace, budget: Budget, outlier_ratios: list[float], lam: float = 0.08) -> Genome:
    """OWL: layers with more outliers keep more. Ratios are min-max scaled to [0, 2*lam] and
    centred, so rate_i = beta - (scaled_i - mean) (the mean rate stays beta before repair)."""
    ratios = torch.tensor(outlier_ratios, dtype=torch.float64)
    spread = ratios.max() - ratios.min()
    scaled = (ratios - ratios.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(ratios)
    rates = budget.average_rate - (scaled - scaled.mean())
    return Genome("layer", tuple(float(r) for r in rates))


def flap(space: PruningSpace, budget: Budget, scores: ImportanceScores) -> Genome:
    """FLAP's AL-AM structure: standardize head and channel scores per module type across all
    layers, then remove the globally lowest units (priced by their real parameter cost) until the
    budget is met. Returns a module-granularity genome."""
    candidates = []  # (standardized score, layer, "attn"|"mlp")
    head_units = [_attention_unit_scores(space, scores, i) for i in range(space.num_layers)]
    mlp_units = [_mlp_unit_scores(space, scores, i) for i in range(space.num_layers)]
    for module, per_layer in (("attn", head_units), ("mlp", mlp_units)):
        flat = torch.cat(per_layer)
        mean, std = flat.mean(), flat.std().clamp_min(1e-12)
        for i, unit_scores in enumerate(per_layer):
            # Sorted ascending, and a module keeps at least one unit.
            for s in ((unit_scores.sort().values - mean) / std)[:-1]:
                candidates.append((float(s), i, module))
    candidates.sort()
    needed = budget.removed_params
    attn = [0] * space.num_layers
    mlp = [0] * space.num_layers
    removed = 0
    for _, i, module in candidates:
        if removed >= needed:
            break
        if module == "attn":
            attn[i] += 1
            removed += space.attn_unit_params(i)
        else:
            mlp[i] += 1
            removed += space.mlp_unit_params(i)
    plan = PruningPlan(tuple(LayerPlan(a, m) for a, m in zip(attn, mlp)))
    return space.realised_genome(plan, "module")


def _attention_unit_scores(space: PruningSpace, scores: ImportanceScores, i: int) -> torch.Tensor:
    """Score of each removable attention unit: in query mode the k-th unit removes the k-th
    weakest head of every group (mean of those); in group mode a unit is a whole group."""
    layer = space.shape.layers[i]
    heads = scores.layers[i].head_scores.float().view(layer.num_key_value_heads, layer.queries_per_group)
    if space.query_mode(layer):
        return heads.sort(dim=1).values.mean(dim=0)
    return heads.mean(dim=1)


def _mlp_unit_scores(space: PruningSpace, scores: ImportanceScores, i: int) -> torch.Tensor:
    channels = scores.layers[i].channel_scores.float().sort().values
    return channels.view(-1, space.mlp_unit).mean(dim=1)


def genome_from_spec(spec: str, space: PruningSpace, granularity: str) -> Genome:
    """A genome given by the user: a comma list of rates, or a JSON file ({"rates": [...],
    "granularity": ...} or a bare list), e.g. one written by an earlier run."""
    path = Path(spec).expanduser()
    if "," not in spec and path.is_file():  # a long comma list is no file name (and too long to stat)
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            granularity = data.get("granularity", granularity)
            data = data.get("rates", data.get("genome", {}).get("rates") if isinstance(data.get("genome"), dict) else None)
        values = data
    else:
        try:
            values = [float(v) for v in spec.split(",") if v.strip()]
        except ValueError:
            raise ValueError(
                f"--allocation {spec!r} is not one of {', '.join(ALLOCATIONS)}, a file, or a comma list of rates"
            ) from None
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"genome {spec!r}: expected a list of numbers")
    expected = space.num_layers if granularity == "layer" else 2 * space.num_layers
    if len(values) != expected:
        raise ValueError(
            f"genome {spec!r} has {len(values)} rates; {granularity} granularity on this model needs {expected}"
        )
    return Genome(granularity, tuple(float(v) for v in values))
