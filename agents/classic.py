"""Classic numeric operators: roles like the LLM's, `(RoleContext) -> Proposal`.

They are the control arm of every ablation and the fallback when an LLM answer is unusable:
feasible random init around the uniform rate, tournament selection, uniform / blend crossover,
Gaussian mutation, and EvoPress's budget-preserving level-switch mutation.
"""
from __future__ import annotations

from pruning.genome import Genome

from agents.types import RoleContext, Proposal


def _noisy(ctx: RoleContext, base: list[float], sigma: float) -> Genome:
    lo, hi = ctx.space.min_rate, ctx.space.max_rate
    return Genome(ctx.granularity, tuple(min(hi, max(lo, r + ctx.rng.gauss(0.0, sigma))) for r in base))


def uniform_rates(ctx: RoleContext) -> list[float]:
    n = ctx.space.num_layers * (1 if ctx.granularity == "layer" else 2)
    return [ctx.budget.average_rate] * n


def initialize(ctx: RoleContext) -> Proposal:
    """The uniform genome, then uniform + Gaussian noise (repair puts each back on budget)."""
    base = uniform_rates(ctx)
    genomes = [Genome(ctx.granularity, tuple(base))]
    while len(genomes) < ctx.count:
        genomes.append(_noisy(ctx, base, sigma=ctx.rng.choice((0.04, 0.08, 0.12))))
    genomes = genomes[: ctx.count]
    return Proposal(genomes=genomes, origins=["classic:init"] * len(genomes), parents=[[] for _ in genomes])


def select(ctx: RoleContext, tournament: int = 3) -> Proposal:
    """`count` parent pairs by tournament on fitness (population is sorted best first)."""
    n = len(ctx.population)
    pairs = []
    for _ in range(ctx.count):
        first = min(ctx.rng.sample(range(n), min(tournament, n)))
        second = min(ctx.rng.sample(range(n), min(tournament, n)))
        if second == first and n > 1:
            second = (first + 1 + ctx.rng.randrange(n - 1)) % n
        pairs.append((first, second))
    return Proposal(pairs=pairs)


def crossover(ctx: RoleContext) -> Proposal:
    """One child per pair (`ctx.pairs`): uniform crossover or blend, alternating at random. With
    exact moves: each layer's attention and MLP units from one parent or the other, then back on
    the budget in whole units."""
    if ctx.move_space is not None:
        return _plan_crossover(ctx)
    result = Proposal()
    for a, b in ctx.pairs:
        pa, pb = ctx.population[a], ctx.population[b]
        if ctx.rng.random() < 0.5:
            rates = [x if ctx.rng.random() < 0.5 else y for x, y in zip(pa.rates, pb.rates)]
            origin = "classic:uniform-crossover"
        else:
            alpha = ctx.rng.random()
            rates = [alpha * x + (1 - alpha) * y for x, y in zip(pa.rates, pb.rates)]
            origin = "classic:blend-crossover"
        result.genomes.append(Genome(ctx.granularity, tuple(rates)))
        result.origins.append(origin)
        result.parents.append([pa.plan_key, pb.plan_key])
    return result


def level_switch(ctx: RoleContext, rates: list[float]) -> list[float]:
    """EvoPress: move a few steps of rate from one layer to another; the mean is preserved."""
    rates = list(rates)
    flips = min(ctx.rng.randint(1, 3), ctx.rng.randint(1, 3))
    step = max(0.02, 1.0 / max(1, ctx.space.mlp_units(0)))
    for _ in range(flips):
        i, j = ctx.rng.sample(range(len(rates)), 2)
        delta = step * ctx.rng.randint(1, 3)
        delta = min(delta, rates[i] - ctx.space.min_rate, ctx.space.max_rate - rates[j])
        if delta > 0:
            rates[i] -= delta
            rates[j] += delta
    return rates


def mutate(ctx: RoleContext) -> Proposal:
    """One mutant per genome (`ctx.genomes`): EvoPress's level switch or Gaussian noise; with exact
    moves, 1 to 3 random parameter-quanta moves of the parent's plan (fewer moves more often)."""
    if ctx.move_space is not None:
        return _plan_mutate(ctx)
    result = Proposal()
    parent_keys = ctx.parent_keys
    for k, genome in enumerate(ctx.genomes):
        if ctx.rng.random() < 0.5:
            rates = level_switch(ctx, list(genome.rates))
            origin = "classic:level-switch"
        else:
            chosen = {i for i in range(len(genome.rates)) if ctx.rng.random() < 0.3} or {ctx.rng.randrange(len(genome.rates))}
            rates = [r + ctx.rng.gauss(0.0, 0.05) if i in chosen else r for i, r in enumerate(genome.rates)]
            origin = "classic:gaussian"
        result.genomes.append(Genome(genome.granularity, tuple(rates)))
        result.origins.append(origin)
        result.parents.append([parent_keys[k]] if parent_keys else [])
    return result


# -- on plans, with exact moves (pruning/quanta.py) ------------------------------------------------

SHIFT_SHARE = 0.3  # children made by one large layer shift; the rest by 1-3 pairwise moves

def _plan_crossover(ctx: RoleContext) -> Proposal:
    from pruning.genome import PruningPlan

    result = Proposal()
    for a, b in ctx.pairs:
        pa, pb = ctx.population[a], ctx.population[b]
        rows = [x if ctx.rng.random() < 0.5 else y for x, y in zip(pa.plan, pb.plan)]
        child = ctx.move_space.rebalance(PruningPlan.from_list(rows), ctx.rng)
        result.plans.append(child)
        result.plan_origins.append("classic:layer-crossover")
        result.plan_parents.append([pa.plan_key, pb.plan_key])
    return result


def _plan_mutate(ctx: RoleContext) -> Proposal:
    result = Proposal()
    for k, plan in enumerate(ctx.plans):
        shift = ctx.move_space.random_shift(plan, ctx.rng) if ctx.rng.random() < SHIFT_SHARE else None
        if shift is not None:
            child, origin = ctx.move_space.apply(plan, shift), "classic:layer-shift"
        else:
            moves = min(ctx.rng.randint(1, 3), ctx.rng.randint(1, 3))
            (child, _), origin = ctx.move_space.mutate(plan, ctx.rng, moves), "classic:exact-move"
        result.plans.append(child)
        result.plan_origins.append(origin)
        result.plan_parents.append([ctx.parent_keys[k]] if ctx.parent_keys else [])
    return result
