"""Deterministic repair: project any genome onto the rate bounds and the parameter budget.

Never trust an LLM (or a mutation) with arithmetic. Repair
1. replaces non-finite rates by the budget's average rate and clips to [min_rate, max_rate];
2. shifts every rate by one common delta (OWL's mean shift) found by bisection, so the snapped
   plan removes at least the parameters the budget asks for;
3. gives back single MLP units, where the snapped plan overshot its rate most, until the model is
   within one MLP unit of the budget (never above it).
It reports every change it made, so the search log can say how much of an answer survived.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from pruning.budget import Budget, BudgetError
from pruning.genome import Genome, LayerPlan, PruningPlan
from pruning.space import PruningSpace


@dataclass
class RepairResult:
    genome: Genome  # realised rates of `plan`
    plan: PruningPlan
    total_params: int
    block_params: int
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.notes)


def repair(genome: Genome, space: PruningSpace, budget: Budget) -> RepairResult:
    notes: list[str] = []
    rates = list(genome.rates)
    bad = [i for i, r in enumerate(rates) if not isinstance(r, (int, float)) or not math.isfinite(r)]
    if bad:
        rates = [budget.average_rate if i in bad else r for i, r in enumerate(rates)]
        notes.append(f"{len(bad)} non-finite rate(s) at {bad[:8]} replaced by the average {budget.average_rate:.3f}")
    clipped = sum(1 for r in rates if r < space.min_rate or r > space.max_rate)
    if clipped:
        notes.append(f"{clipped} rate(s) clipped to [{space.min_rate:g}, {space.max_rate:g}]")
    base = Genome(genome.granularity, tuple(rates)).shifted(0.0, space.min_rate, space.max_rate)

    needed = space.shape.total_params() - budget.target_params  # params that must go

    def removed(delta: float) -> tuple[int, PruningPlan]:
        plan = space.snap(base.shifted(delta, space.min_rate, space.max_rate))
        return space.shape.total_params() - space.total_params(plan), plan

    got, plan = removed(0.0)
    delta = 0.0
    if got != needed:
        # Removal grows with delta: find the smallest delta that removes enough, on the side of
        # zero that can reach it (positive when too little is removed, negative when too much).
        low, high = (0.0, 1.0) if got < needed else (-1.0, 0.0)
        got_high, plan_high = removed(high) if got < needed else (got, plan)
        if got_high < needed:
            raise BudgetError(f"{budget.description} cannot be met within the rate bounds (max {space.max_rate:g})")
        for _ in range(50):
            mid = (low + high) / 2
            got_mid, plan_mid = removed(mid)
            if got_mid >= needed:
                high, got_high, plan_high = mid, got_mid, plan_mid
            else:
                low = mid
        delta, got, plan = high, got_high, plan_high
    if abs(delta) > 1e-6:
        notes.append(f"all rates shifted by {delta:+.4f} to meet the budget")

    desired = base.shifted(delta, space.min_rate, space.max_rate)
    plan, trimmed = _trim_to_one_unit(space, plan, desired, got - needed)
    if trimmed:
        notes.append(f"{trimmed} MLP unit(s) given back to land within one unit of the budget")

    realised = space.realised_genome(plan, genome.granularity)
    pruned = space.pruned_shape(plan)
    return RepairResult(realised, plan, pruned.total_params(), pruned.block_params(), notes)


def _trim_to_one_unit(space: PruningSpace, plan: PruningPlan, desired: Genome, excess: int) -> tuple[PruningPlan, int]:
    """Un-remove MLP units while the excess covers one; largest overshoot first, ties by index.

    A unit's price is taken from the exact layer counts (with bias compensation, the first unit
    removed from a layer also adds a bias, so prices differ by a few parameters)."""
    layers = list(plan.layers)
    trimmed = 0

    def price(i: int) -> int:
        lp = layers[i]
        return space.removed_params(i, lp) - space.removed_params(i, LayerPlan(lp.attn_units_removed, lp.mlp_units_removed - 1))

    while True:
        realised = space.realised_genome(PruningPlan(tuple(layers)), desired.granularity).mlp_rates
        candidates = [
            (desired.mlp_rates[i] - realised[i], i)
            for i, lp in enumerate(layers)
            if lp.mlp_units_removed > 0 and price(i) <= excess
        ]
        if not candidates:
            return PruningPlan(tuple(layers)), trimmed
        _, i = min(candidates)
        excess -= price(i)
        layers[i] = LayerPlan(layers[i].attn_units_removed, layers[i].mlp_units_removed - 1)
        trimmed += 1
