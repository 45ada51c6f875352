"""Pure random search behind the role interface: every "operator" ignores the population and
draws fresh random genomes, so the ablation's random arm runs through the same graph, repair,
de-duplication, fitness cache and evaluation budget as every other arm."""
from __future__ import annotations

from pruning.genome import Genome

from agents.types import RoleContext, Proposal


def random_genome(ctx: RoleContext) -> Genome:
    """Rates uniform in a band around the average whose width is itself random (0.05 to the full
    range), so both near-uniform and strongly non-uniform allocations get drawn; repair then puts
    the genome exactly on the budget."""
    lo, hi = ctx.space.min_rate, ctx.space.max_rate
    n = ctx.space.num_layers * (1 if ctx.granularity == "layer" else 2)
    avg = ctx.budget.average_rate
    spread = ctx.rng.uniform(0.05, max(0.05, hi - lo))
    low, high = max(lo, avg - spread), min(hi, avg + spread)
    return Genome(ctx.granularity, tuple(ctx.rng.uniform(low, high) for _ in range(n)))


def _draw(ctx: RoleContext, count: int) -> Proposal:
    genomes = [random_genome(ctx) for _ in range(count)]
    return Proposal(genomes=genomes, origins=["random"] * count, parents=[[] for _ in genomes])


def random_roles() -> dict:
    """Every operator ignores the population and draws; the selector's pairs go unused."""
    return {
        "initializer": lambda ctx: _draw(ctx, ctx.count),
        "selector": lambda ctx: Proposal(pairs=[(0, min(1, len(ctx.population) - 1))] * ctx.count),
        "crosser": lambda ctx: _draw(ctx, len(ctx.pairs)),
        "mutator": lambda ctx: _draw(ctx, len(ctx.genomes)),
    }
