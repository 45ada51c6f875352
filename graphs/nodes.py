"""The graph's nodes. Each is a small function of the state; heavy objects (model, evaluator,
chat backend, database) come in through `SearchDeps`, never through the checkpointed state."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable

from agents.proposals import to_candidates
from agents.types import Candidate, RoleContext, Proposal
from graphs.state import SearchState
from pruning.genome import PruningPlan


@dataclass
class SearchSettings:
    population: int = 8
    generations: int = 4
    offspring: int = 8
    patience: int = 0  # stop after this many generations without improvement (0 = never)
    seed: int = 0
    granularity: str = "layer"
    model_name: str = ""
    min_distance: float = 0.005  # survivors closer than this (mean |rate diff|) count as duplicates


@dataclass
class SearchDeps:
    roles: dict  # agents.roles.Roles: role name -> (RoleContext) -> Proposal
    evaluator: object  # evaluation.fitness.FitnessEvaluator
    store: object  # store.run_store.RunStore
    space: object
    budget: object
    settings: SearchSettings
    layer_importance: list = field(default_factory=list)
    finalizer: Callable[[Candidate], dict] | None = None
    on_event: Callable[[str, dict], None] | None = None  # live view hook


def _population(state: SearchState) -> list[Candidate]:
    return [Candidate.from_dict(c) for c in state.get("population", [])]


def _context(deps: SearchDeps, state: SearchState, role: str, count: int) -> RoleContext:
    population = _population(state)
    known = {c.plan_key for c in population} | deps.evaluator.known_keys()
    return RoleContext(
        space=deps.space, budget=deps.budget, granularity=deps.settings.granularity, population=population,
        count=count, generation=state.get("generation", 0), rng=random.Random(f"{deps.settings.seed}:{state.get('generation', 0)}:{role}"),
        known_keys=known, model_name=deps.settings.model_name, layer_importance=deps.layer_importance,
    )


def _record(deps: SearchDeps, result: Proposal, candidates: list[Candidate]) -> None:
    for call in result.calls:
        deps.store.record_call(call.to_dict())
    for cand in candidates:
        deps.store.record_candidate(cand.to_dict())
    if deps.on_event:
        deps.on_event("proposed", {"calls": [c.to_dict() for c in result.calls], "count": len(candidates)})


def make_nodes(deps: SearchDeps) -> dict[str, Callable[[SearchState], dict]]:
    s = deps.settings

    def initialize(state: SearchState) -> dict:
        ctx = _context(deps, state, "initializer", s.population)
        result = deps.roles["initializer"](ctx)
        candidates = to_candidates(ctx, result.genomes, result.origins, result.parents)
        _record(deps, result, candidates)
        return {"generation": 0, "offspring": [c.to_dict() for c in candidates], "population": [],
                "best_history": [], "stale": 0, "done": False}

    def evaluate(state: SearchState) -> dict:
        evaluated = []
        offspring = state.get("offspring", [])
        for k, data in enumerate(offspring):
            cand = Candidate.from_dict(data)
            result = deps.evaluator.evaluate(PruningPlan.from_list(cand.plan))
            cand.fitness = result.value
            evaluated.append(cand.to_dict())
            if deps.on_event:
                deps.on_event("evaluated", {"done": k + 1, "total": len(offspring), "fitness": result.value,
                                            "cached": result.cached, "seconds": result.seconds})
        return {"offspring": evaluated}

    def survive(state: SearchState) -> dict:
        started = time.perf_counter()
        merged: dict[str, Candidate] = {}
        for cand in _population(state) + [Candidate.from_dict(c) for c in state.get("offspring", [])]:
            if cand.plan_key not in merged or cand.fitness < merged[cand.plan_key].fitness:
                merged[cand.plan_key] = cand
        ranked = sorted(merged.values(), key=lambda c: (c.fitness, c.plan_key))
        survivors = _diverse_top(ranked, s.population, s.min_distance)
        best = survivors[0].fitness
        history = list(state.get("best_history", []))
        improved = not history or best < min(history) - 1e-9
        stale = 0 if improved else state.get("stale", 0) + 1
        history.append(best)
        generation = state.get("generation", 0)
        fits = [c.fitness for c in survivors]
        stats = {"best": best, "mean": sum(fits) / len(fits), "diversity": _diversity(survivors),
                 "wall_s": time.perf_counter() - started, "evaluations": deps.evaluator.evaluations}
        deps.store.record_generation(generation, stats, [c.plan_key for c in survivors])
        done = generation + 1 > s.generations or (s.patience > 0 and stale >= s.patience)
        if deps.on_event:
            deps.on_event("generation", {"generation": generation, **stats, "done": done})
        return {"population": [c.to_dict() for c in survivors], "offspring": [], "best_history": history,
                "stale": stale, "done": done, "generation": generation if done else generation + 1}

    def select(state: SearchState) -> dict:
        ctx = _context(deps, state, "selector", s.offspring)
        result = deps.roles["selector"](ctx)
        _record(deps, result, [])
        return {"pairs": [list(p) for p in result.pairs]}

    def crossover(state: SearchState) -> dict:
        n_cross = s.offspring // 2
        pairs = [tuple(p) for p in state["pairs"][:n_cross]]
        ctx = _context(deps, state, "crosser", len(pairs))
        ctx.pairs = pairs
        result = deps.roles["crosser"](ctx) if pairs else Proposal()
        children = to_candidates(ctx, result.genomes, result.origins, result.parents)
        _record(deps, result, children)
        return {"offspring": [c.to_dict() for c in children]}

    def mutate(state: SearchState) -> dict:
        population = _population(state)
        chosen = [population[p[0]] for p in state["pairs"][s.offspring // 2 :]]
        ctx = _context(deps, state, "mutator", len(chosen))
        ctx.known_keys |= {c["plan_key"] for c in state.get("offspring", [])}
        ctx.genomes, ctx.parent_keys = [c.genome for c in chosen], [c.plan_key for c in chosen]
        result = deps.roles["mutator"](ctx) if chosen else Proposal()
        mutants = to_candidates(ctx, result.genomes, result.origins, result.parents)
        _record(deps, result, mutants)
        return {"offspring": state.get("offspring", []) + [c.to_dict() for c in mutants]}

    def finalize(state: SearchState) -> dict:
        best = _population(state)[0]
        final = deps.finalizer(best) if deps.finalizer else {}
        return {"best": best.to_dict(), "final": final}

    return {"initialize": initialize, "evaluate": evaluate, "survive": survive, "select": select,
            "crossover": crossover, "mutate": mutate, "finalize": finalize}


def _distance(a: Candidate, b: Candidate) -> float:
    return sum(abs(x - y) for x, y in zip(a.rates, b.rates)) / len(a.rates)


def _diverse_top(ranked: list[Candidate], size: int, min_distance: float) -> list[Candidate]:
    """Best first, skipping near-copies of an already kept genome; refill from the skipped."""
    kept, skipped = [], []
    for cand in ranked:
        (kept if all(_distance(cand, k) >= min_distance for k in kept) else skipped).append(cand)
        if len(kept) == size:
            break
    return (kept + skipped)[:size]


def _diversity(population: list[Candidate]) -> float:
    n = len(population)
    if n < 2:
        return 0.0
    total = sum(_distance(population[i], population[j]) for i in range(n) for j in range(i + 1, n))
    return total / (n * (n - 1) / 2)
