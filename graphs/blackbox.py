"""A library black-box optimizer (Nevergrad: CMA-ES, NGOpt, ...) driving the same genome, repair,
fitness evaluator, cache and evaluation budget as the evolutionary graph: the strongest non-LLM
control we can get without writing an optimizer ourselves.

The optimizer proposes raw rates in [min_rate, max_rate]; repair (the same deterministic decoder
every LLM answer goes through) maps them onto the budget, and the optimizer is told the fitness
of the repaired plan. A plan already evaluated costs nothing: the cache answers. Re-running the
same seed replays the same asks, so a killed run resumes from the run database.
"""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from agents.proposals import candidate_from
from graphs.nodes import SearchDeps, make_nodes
from pruning.genome import Genome, PruningPlan
from pruning.repair import repair

OPTIMIZER_ALIASES = {"cma": "CMA", "ngopt": "NGOpt"}


def optimizer_class(name: str):
    import nevergrad as ng

    name = OPTIMIZER_ALIASES.get(name.lower(), name)
    if name not in ng.optimizers.registry:
        raise ValueError(f"unknown Nevergrad optimizer {name!r}; e.g. CMA, NGOpt, DE, TwoPointsDE, OnePlusOne")
    return name, ng.optimizers.registry[name]


def run_blackbox(deps: SearchDeps, optimizer: str, max_evals: int) -> dict:
    """Returns {"best": Candidate dict}. Generations are bookkept every `population` evaluations
    so `runs` and `replay` show the run like any other."""
    import nevergrad as ng

    name, cls = optimizer_class(optimizer)
    s, space, budget = deps.settings, deps.space, deps.budget
    length = space.num_layers * (1 if s.granularity == "layer" else 2)
    parametrization = ng.p.Array(init=np.full(length, budget.average_rate), lower=space.min_rate, upper=space.max_rate)
    parametrization.random_state = np.random.RandomState(s.seed)
    opt = cls(parametrization=parametrization, budget=max_evals)
    # NGOpt's sub-optimizers warn about tolerances and early convergence (then sample at random):
    # expected at a 40-evaluation budget, and not something a user can act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"nevergrad\..*|scipy\._lib\.pyprima\..*")
        state = _ask_tell(deps, opt, name, max_evals)  # a resume replays every ask: the state is whole again
    # the graph's own finalize: with a judge, the champion of each batch's best and the last survivors
    # on the fixed windows, as the evolutionary loop's (its finalizer, if any, is not ours to call here)
    return {"best": make_nodes(replace(deps, finalizer=None))["finalize"](state)["best"]}


def _ask_tell(deps: SearchDeps, opt, name: str, max_evals: int) -> dict:
    """Ask, repair, evaluate, tell, one point at a time (the optimizer's own order); the evaluation
    and, every `population` evaluations, the survival step are the graph's own nodes, so fitness,
    cache, events, survivors and generation records are the search's, not a copy."""
    nodes = make_nodes(deps)
    s, space, budget = deps.settings, deps.space, deps.budget
    # every ask is scored at the last fidelity stage; a batch of `population` asks shares one fresh sample
    last, stage = len(s.stages) - 1, s.stages[-1]
    # a resumed run replays the optimizer's asks (same seed): their scores come back from the run
    # database, and they count as they did the first time
    evaluated = 0
    seen: set[tuple[str, int]] = set()
    state: dict = {"generation": 0, "population": [], "offspring": [], "best_history": [], "stale": 0}
    in_batch, asks = 0, 0
    while evaluated < max_evals and asks < 10 * max_evals:
        asks += 1
        point = opt.ask()
        result = repair(Genome(s.granularity, tuple(float(v) for v in point.value)), space, budget)
        generation = evaluated // max(1, s.population)
        candidate = candidate_from(result, f"nevergrad:{name}", generation)
        scored = deps.fitness.score(result.plan, generation, last, stage)
        deps.store.record_candidate(candidate.to_dict())  # once per (plan, generation)
        candidate.fitness, candidate.stage = scored.value, last
        opt.tell(point, scored.value)
        if (result.plan.key(), generation) in seen:
            continue  # asked twice in one batch: no evaluation spent
        seen.add((result.plan.key(), generation))
        state["offspring"].append(candidate.to_dict())
        evaluated += 1
        in_batch += 1
        if in_batch == s.population or evaluated >= max_evals:
            # the survivors so far re-scored on this batch's sample, so that all compare on one draw
            for member in state["population"]:
                again = deps.fitness.score(PruningPlan.from_list(member["plan"]), generation, last, stage)
                member.update(fitness=again.value, stage=last)
            batch = {c["plan_key"]: c for c in state["population"] + state["offspring"]}
            ranked = sorted(batch.values(), key=lambda c: (c["fitness"], c["plan_key"]))
            state.update(nodes["survive"]({**state, "offspring": ranked, "generation": generation}))
            in_batch = 0
    return state

