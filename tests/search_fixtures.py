"""A complete search on the tiny random Llama, with any role implementation."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from agents.chat import ChatBackend
from agents.prompting import PromptSet
from agents.roles import make_roles
from graphs.nodes import SearchDeps, SearchSettings
from graphs.runner import run_search
from pruning.adapter import DecoderAdapter
from pruning.budget import budget_from_args
from pruning.context import PruningContext
from pruning.data import TokenWindows
from pruning.importance import collect_activation_stats, compute_importance, layer_importance
from pruning.space import PruningSpace
from store.run_store import RunStore
from tests.tiny import tiny_inputs, tiny_llama
from evaluation.fidelity import SampledFitness, parse_stages
from evaluation.fitness import FitnessEvaluator
from pruning.quanta import MoveSpace


def fake_backend(answers: list[str]) -> ChatBackend:
    return ChatBackend(name="fake", chat=FakeListChatModel(responses=answers))


def tiny_fitness(kind="kl", store=None, seed=0) -> SampledFitness:
    """The tiny search's evaluator: the same in every process that builds it (a Ray worker's too)."""
    model = tiny_llama()
    space = PruningSpace(DecoderAdapter(model).shape(), mlp_unit=16)
    stats = collect_activation_stats(model, TokenWindows(tiny_inputs(4, 32, seed=3), "t", "v"))
    scores = compute_importance(model, stats, "wanda-sp")
    context = PruningContext(model, space, stats, scores)
    return SampledFitness(context, TokenWindows(tiny_inputs(6, 32, seed=5), "t", "fit"), kind=kind, store=store,
                          seed=seed)


def tiny_judge(context, store=None) -> FitnessEvaluator:
    """The champion's evaluator on fixed windows for the tiny search."""
    return FitnessEvaluator(context, TokenWindows(tiny_inputs(3, 32, seed=11), "t", "judge"), kind="kl", store=store)


@dataclass
class TinyEvaluator:
    """Builds `tiny_fitness` inside a Ray worker. delay: seconds every computation sleeps first (so a
    test can kill a worker mid-evaluation); poison: the key of a plan whose evaluation kills its worker."""

    kind: str = "kl"
    seed: int = 0
    delay: float = 0.0
    poison: str | None = None
    stall: str | None = None  # the key of a plan whose evaluation hangs (a minute)
    judge: bool = False  # also the judge's evaluator (`tiny_judge`)

    def __call__(self):
        fitness = tiny_fitness(self.kind, seed=self.seed)
        compute = fitness.compute

        def slow_or_deadly(plan, *args):
            if plan.key() == self.poison:
                os._exit(1)
            if plan.key() == self.stall:
                time.sleep(60)
            time.sleep(self.delay)
            return compute(plan, *args)

        fitness.compute = slow_or_deadly
        return {"stages": fitness, "judge": tiny_judge(fitness.context)} if self.judge else fitness


def tiny_search_deps(run_dir: Path, roles, rate=0.3, granularity="layer", population=4, generations=2, offspring=4,
                     seed=0, kind="kl", stages="2x16:3,2x32:2") -> SearchDeps:
    store = RunStore(run_dir / "run.db")
    fitness = tiny_fitness(kind, store=store)  # its draws: seed 0 whatever the search seed (as before)
    context = fitness.context
    space, scores = context.space, context.scores
    budget = budget_from_args(space.shape, None, rate, space.min_total_params(granularity))
    store.start_run("test", "tiny", budget.description, "fake", {}, {})
    settings = SearchSettings(population=population, generations=generations, offspring=offspring, seed=seed,
                              granularity=granularity, model_name="tiny", stages=parse_stages(stages))
    return SearchDeps(roles=roles, fitness=fitness, store=store, space=space, budget=budget, settings=settings,
                      moves=MoveSpace(space, budget), seeds=[("seed:uniform", context.uniform_plan(budget))],
                      layer_importance=layer_importance(scores))


def run_tiny(run_dir: Path, roles, **kwargs) -> tuple[dict, SearchDeps]:
    deps = tiny_search_deps(run_dir, roles, **kwargs)
    final = run_search(deps, "test", run_dir / "checkpoint.db")
    return final, deps


def llm_roles(answers: list[str], retries: int = 1, prompts: PromptSet | None = None, **kwargs):
    return make_roles(fake_backend(answers), prompts or PromptSet.load(), retries=retries, **kwargs)
