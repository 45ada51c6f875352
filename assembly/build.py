"""From a `RunConfig` to a runnable search: the one place the pieces are put together.

Two steps, so that the expensive one is shared:
- `prepare_run`: text, then weights, then calibration (once per model: the search command does it
  once, an ablation once for all its cells, the headline benchmark once for all its rates);
- `build_search`: the fitness evaluator, the engine's search settings and the graph's
  dependencies for one search over a prepared model (the search command, every ablation cell).

Nothing here assumes where an evaluation runs: the evaluator is the one object a search asks
for fitness, so a remote pool of evaluators can stand in for it later.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from assembly.config import RunConfig
from assembly.placement_options import offload_folder_for, show_placement
from graphs.nodes import SearchDeps
from pruning.budget import Budget
from pruning.context import PruningContext
from pruning.data import TokenWindows, load_windows
from pruning import allocation
from pruning.genome import PruningPlan
from pruning.importance import ImportanceScores, layer_importance, wanda_outlier_ratios
from pruning.loading import LoadedModel, load_model, load_tokenizer
from pruning.prepare import calibration_windows, make_budget, prepare
from pruning.quanta import MoveSpace
from pruning.repair import repair
from evaluation.fidelity import SampledFitness
from evaluation.fitness import FitnessEvaluator
from ui.console import err_console, progress_bar, stage


@dataclass
class PreparedRun:
    """A loaded, calibrated model and the text a search reads: everything its searches share."""

    config: RunConfig
    loaded: LoadedModel
    context: PruningContext
    fitness_windows: TokenWindows  # validation: the fixed windows a finished plan's fitness is stated on
    test_windows: TokenWindows  # test: reported, never searched on
    fitness_pool: TokenWindows | None = None  # validation: every window, the search's stages draw from it

    def budget_for(self, granularity: str | None = None) -> Budget:
        """The config's --budget / --rate on this model (granularity: the config's unless given;
        it sets the smallest model a plan can reach)."""
        return make_budget(self.context.space, self.config.budget, self.config.rate, granularity or self.config.granularity)


def prepare_run(config: RunConfig, run_dir: Path, calibration_label: str = "calibration") -> PreparedRun:
    settings = config.prune_settings()
    # Text first, weights second: tokenizing a split is a transient that must not stack on the
    # model, and missing data fails before a long load.
    with stage("data"):
        tokenizer = load_tokenizer(config.model, config.random_weights)
        calibration = calibration_windows(tokenizer, settings)
        pool = load_windows("wikitext2", "validation", tokenizer, config.fitness_seqlen, config.data_dir)
        fitness = pool.tail(config.fitness_windows)  # the split's last windows
        test = load_windows("wikitext2", "test", tokenizer, config.eval_seqlen, config.data_dir)
        test = test.head(config.final_eval_windows or None)
    with stage("loading"), err_console.status(f"loading {config.model} ..."):
        loaded = load_model(config.model, dtype=config.dtype, device=config.device, max_memory=config.max_memory,
                            offload_folder=offload_folder_for(config, run_dir), random_weights=config.random_weights,
                            seed=config.seed, on_placement=show_placement, tokenizer=tokenizer)
    with stage("calibration"), progress_bar(calibration_label) as progress:
        context, _ = prepare(loaded.model, loaded.tokenizer, settings, progress=progress, calibration=calibration)
    return PreparedRun(config, loaded, context, fitness, test, pool)


def prepare_reconstruction(context: PruningContext, budget: Budget) -> None:
    """The refit table (and `--metric obs`'s scores) for this budget, with a progress bar; read from
    the disk cache when an earlier run made it."""
    if context.reconstruction.mode != "ls" and not context.scores.metric.startswith("obs"):
        return
    with stage("reference pass"), progress_bar("reference pass (refit table)") as progress:
        context.prepare_for(budget, progress=progress)


def build_search(config: RunConfig, context: PruningContext, budget: Budget, pool: TokenWindows,
                 store, roles, *, seed: int | None = None, granularity: str | None = None,
                 finalizer: Callable | None = None, on_event: Callable | None = None, judge=None,
                 latency_table: Path | None = None, status: Callable | None = None) -> SearchDeps:
    """One search over a prepared model. seed / granularity: an ablation cell's own (else the config's).
    `pool`: the validation windows the fidelity stages draw their samples from. `judge`: the fixed-window
    fitness (final_fitness) finalize picks the champion with. `latency_table`: where the run keeps its
    module timings (--latency-weight above 0; default: the cache folder)."""
    prepare_reconstruction(context, budget)
    settings = config.search_settings(seed=seed, granularity=granularity)
    fitness = SampledFitness(context, pool, kind=config.fitness, store=store, batch_size=config.batch_size,
                             seed=settings.seed)
    moves = MoveSpace(context.space, budget)
    comparable = context.comparable_scores()  # made once: the FLAP seed and the initializer's facts
    return SearchDeps(roles=roles, fitness=fitness, store=store, space=context.space, budget=budget,
                      settings=settings, moves=moves, seeds=seed_plans(context, budget, moves, comparable),
                      layer_importance=layer_importance(comparable), finalizer=finalizer, on_event=on_event,
                      judge=judge, objective=latency_objective(config, context, budget, latency_table, status))


def latency_objective(config: RunConfig, context: PruningContext, budget: Budget, path: Path | None = None,
                      status: Callable | None = None):
    """--latency-weight above 0: the objective that weighs predicted prefill latency in (evaluation/
    latency_table.py), its table measured on the model's compute device or read from `path`."""
    if config.latency_weight <= 0:
        return None
    from evaluation.latency_table import LatencyObjective, LatencyTable
    from pruning.loading import cache_dir
    from pruning.placement import input_device

    device = input_device(context.model)
    dtype = next(p.dtype for p in context.model.parameters() if p.is_floating_point())
    if path is None:
        path = cache_dir() / "latency" / f"{config.model.replace('/', '--')}-{device.type}-{str(dtype)[6:]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
    table = LatencyTable.load_or_measure(path, context.space, device, dtype, seqlen=config.eval_seqlen, status=status)
    return LatencyObjective(table, context.space, context.uniform_plan(budget), config.latency_weight)


def final_fitness(config: RunConfig, context: PruningContext, windows: TokenWindows, store=None) -> FitnessEvaluator:
    """The fitness a finished plan is stated on: fixed validation windows, the search's kind."""
    return FitnessEvaluator(context, windows, kind=config.fitness, mode=config.fitness_mode, store=store,
                            batch_size=config.batch_size)


def seed_plans(context: PruningContext, budget: Budget, moves: MoveSpace,
               comparable: ImportanceScores) -> list[tuple[str, PruningPlan]]:
    """The one-shot allocations as first candidates, each on the budget in whole units: uniform,
    OWL (outlier-weighted layer rates), FLAP's global adaptive structure and LLM-Pruner's layer range
    (first and last layers whole: the region the best searched plans at rate 0.5 reached).
    `comparable`: scores whose sizes compare across layers (`context.comparable_scores()`), for FLAP."""
    space = context.space
    rng = random.Random(0)
    seeds = [("seed:uniform", context.uniform_plan(budget))]
    ratios = wanda_outlier_ratios(context.model, context.stats)
    for origin, genome in (("seed:owl", allocation.owl(space, budget, ratios)),
                           ("seed:flap", allocation.flap(space, budget, comparable)),  # across layers
                           ("seed:llm-pruner", allocation.llm_pruner(space, budget))):
        seeds.append((origin, moves.rebalance(repair(genome, space, budget).plan, rng)))
    return seeds
