"""Genomes (what the search evolves) and plans (what pruning executes).

A `Genome` is continuous: one pruning rate per decoder layer (the paper's search space) or, at
module granularity, an attention rate and an MLP rate per layer. A `PruningPlan` is discrete:
how many attention units and MLP units each layer removes. `PruningSpace.snap` maps a genome to
a plan; the plan is the canonical form (fitness is cached by `plan.key()`).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

GRANULARITIES = ("layer", "module")


@dataclass(frozen=True)
class Genome:
    granularity: str
    rates: tuple[float, ...]  # layer: L rates; module: L attention rates then L MLP rates

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, not {self.granularity!r}")

    @classmethod
    def uniform(cls, granularity: str, num_layers: int, rate: float) -> "Genome":
        n = num_layers if granularity == "layer" else 2 * num_layers
        return cls(granularity, tuple([float(rate)] * n))

    @property
    def num_layers(self) -> int:
        return len(self.rates) if self.granularity == "layer" else len(self.rates) // 2

    @property
    def attention_rates(self) -> tuple[float, ...]:
        return self.rates if self.granularity == "layer" else self.rates[: self.num_layers]

    @property
    def mlp_rates(self) -> tuple[float, ...]:
        return self.rates if self.granularity == "layer" else self.rates[self.num_layers :]

    def shifted(self, delta: float, low: float, high: float) -> "Genome":
        return Genome(self.granularity, tuple(min(high, max(low, r + delta)) for r in self.rates))

    def is_finite(self) -> bool:
        return all(math.isfinite(r) for r in self.rates)

    def to_list(self) -> list[float]:
        return [round(r, 6) for r in self.rates]


@dataclass(frozen=True)
class LayerPlan:
    attn_units_removed: int
    mlp_units_removed: int


@dataclass(frozen=True)
class PruningPlan:
    layers: tuple[LayerPlan, ...]

    @classmethod
    def keep_all(cls, num_layers: int) -> "PruningPlan":
        return cls(tuple(LayerPlan(0, 0) for _ in range(num_layers)))

    def key(self) -> str:
        text = ";".join(f"{p.attn_units_removed},{p.mlp_units_removed}" for p in self.layers)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_list(self) -> list[list[int]]:
        return [[p.attn_units_removed, p.mlp_units_removed] for p in self.layers]

    @classmethod
    def from_list(cls, rows) -> "PruningPlan":
        return cls(tuple(LayerPlan(int(a), int(m)) for a, m in rows))
