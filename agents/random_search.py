"""Pure random search behind the role interface: every "operator" ignores the population and
draws fresh random genomes, so the ablation's random arm runs through the same graph, repair,
de-duplication, fitness cache and evaluation budget as every other arm."""
from __future__ import annotations

from pruning.genome import Genome

from agents.types import RoleContext, RoleResult


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


class RandomRoles:
    name = "random"

    def _draw(self, ctx: RoleContext, count: int, parents: list[list[str]] | None = None) -> RoleResult:
        genomes = [random_genome(ctx) for _ in range(count)]
        return RoleResult(genomes=genomes, origins=["random"] * count, parents=parents or [[] for _ in genomes])

    def initialize(self, ctx: RoleContext) -> RoleResult:
        return self._draw(ctx, ctx.count)

    def select(self, ctx: RoleContext) -> RoleResult:
        return RoleResult(pairs=[(0, min(1, len(ctx.population) - 1))] * ctx.count)  # unused by the draws

    def crossover(self, ctx: RoleContext, pairs) -> RoleResult:
        return self._draw(ctx, len(pairs))

    def mutate(self, ctx: RoleContext, genomes, parent_keys) -> RoleResult:
        return self._draw(ctx, len(genomes))
