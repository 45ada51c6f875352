"""The ablation grid: arms x seeds, each arm a different set of operators behind the same graph
(or a library optimizer), all with the same evaluation budget, the same cached importance
scores, the same fitness windows and the same repair. One folder per cell
(`cells/<arm>-s<seed>/` with run.db, checkpoint.db, cell.json): a finished cell is never run
again, a killed one resumes from its database, and processes running disjoint arms into the
same folder do not collide.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agents.prompting import PromptSet, prompt_overrides
from agents.roles import classic_roles, make_roles, random_roles
from agents.types import ROLES
from assembly.build import build_search, final_fitness, prepare_reconstruction
from assembly.config import RunConfig
from graphs.blackbox import optimizer_class, run_blackbox
from graphs.runner import run_search
from pruning.genome import PruningPlan
from pruning.perplexity import perplexity
from pruning.placement import is_dispatched
from pruning.versions import versions
from store.run_store import RunStore
from evaluation.finalize import reconstructed_name, uniform_wanda_sp

DEFAULT_ARMS = ("llm", "classic", "random", "llm-init", "prompts:no-importance", "prompts:no-history",
                "prompts:diverse", "prompts:moves", "cma")
ARMS_HELP = ("llm (all roles), llm+tools (all roles, calling tools: --tool-budget), classic, random, llm-init (LLM initializer, classic rest), prompts:<set> "
             "(LLM with a prompt set), cma / ngopt / ng:<Nevergrad optimizer>; suffix @module for module granularity")


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # classic | random | llm | blackbox
    prompts: str | None = None  # a prompt set of its own (prompts:<set>), else the run's --prompts
    llm_roles: tuple[str, ...] = ROLES
    optimizer: str = ""
    granularity: str = "layer"
    tools: bool = False  # the LLM roles call tools before answering (llm+tools)

    @property
    def uses_llm(self) -> bool:
        return self.kind == "llm"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.name).strip("-")


def parse_arm(spec: str) -> Arm:
    base, _, granularity = spec.strip().partition("@")
    granularity = granularity or "layer"
    if granularity not in ("layer", "module"):
        raise ValueError(f"arm {spec!r}: granularity after @ must be layer or module")
    if base == "llm":
        return Arm(spec, "llm", granularity=granularity)
    if base == "llm+tools":
        return Arm(spec, "llm", granularity=granularity, tools=True)
    if base == "llm-init":
        return Arm(spec, "llm", llm_roles=("initializer",), granularity=granularity)
    if base in ("classic", "random"):
        return Arm(spec, base, granularity=granularity)
    if base.startswith("prompts:"):
        PromptSet.load(base.split(":", 1)[1])  # fails now, with the set's problem, not hours later
        return Arm(spec, "llm", prompts=base.split(":", 1)[1], granularity=granularity)
    if base in ("cma", "ngopt") or base.startswith("ng:"):
        name, _ = optimizer_class(base.split(":", 1)[1] if base.startswith("ng:") else base)
        return Arm(spec, "blackbox", optimizer=name, granularity=granularity)
    raise ValueError(f"unknown arm {spec!r}; arms: {ARMS_HELP}")


@dataclass
class AblationSetup:
    """Everything the cells share: built once (model, calibration, windows), used by every cell.
    `config` holds every setting (the cells' own seed and granularity come from the cell)."""

    config: RunConfig
    context: object  # PruningContext
    budgets: dict  # granularity -> Budget
    fitness_windows: object
    test_windows: object
    fitness_pool: object = None  # validation windows the fidelity stages draw from (default: fitness_windows)
    backend_factory: Callable[[], object] | None = None  # starts the chat backend on first use
    _backend: object = None

    @property
    def max_evals(self) -> int:
        return self.config.max_evals

    def backend(self):
        if self._backend is None:
            if self.backend_factory is None:
                raise ValueError("LLM arms need an agent backend (--agent local, openai:<model> or a URL)")
            self._backend = self.backend_factory()
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def uniform_reference(setup: AblationSetup, out_dir: Path) -> dict:
    """Fitness and test perplexity of the uniform one-shot baseline, the line every arm must beat
    (cached in reference.json): uniform Wanda-sp, or with `--reconstruct ls` uniform with the same
    refit the arms get (the strongest one-shot model, and on the arms' own objective)."""
    path = out_dir / "reference.json"
    if path.exists():
        return json.loads(path.read_text())
    budget = setup.budgets["layer"]
    if setup.context.reconstruction.mode == "ls":
        context, name = setup.context, reconstructed_name(setup.context)
        prepare_reconstruction(context, budget)
        plan = context.uniform_plan(budget)
    else:
        (context, uniform), name = uniform_wanda_sp(setup.context, budget), "uniform wanda-sp"
        plan = uniform.plan
    reference = {"name": name, "uniform_fitness": final_fitness(setup.config, context, setup.fitness_windows).evaluate(plan).value,
                 "uniform_test_ppl": plan_perplexity(context, plan, setup.test_windows, setup.config.batch_size)}
    path.write_text(json.dumps(reference, indent=2))
    return reference


def plan_perplexity(context, plan, windows, batch_size: int) -> float:
    """Test perplexity of a plan as finalize would make it (re-fitted exactly, not from the search's
    refit table): on the physically pruned copy, or under masks when the model is spread over devices
    or offloaded, where no copy is made (masked == sliced, tested)."""
    if is_dispatched(context.model):
        with context.masked(plan, exact=True) as model:
            return perplexity(model, windows, batch_size=batch_size)
    return perplexity(context.prune(plan, exact=True), windows, batch_size=batch_size)


def run_cell(setup: AblationSetup, arm: Arm, seed: int, out_dir: Path,
             on_event: Callable[[str, dict], None] | None = None) -> dict:
    """Runs (or resumes, or just returns) one arm x seed cell; writes cells/<arm>-s<seed>/cell.json."""
    cell_dir = out_dir / "cells" / f"{arm.slug}-s{seed}"
    done = cell_dir / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    budget = setup.budgets[arm.granularity]
    store = RunStore(cell_dir / "run.db")
    run_id = f"ablation-{arm.slug}-s{seed}"
    resume = store.run() is not None
    store.start_run(run_id, setup.config.model, budget.description, arm.name,
                    {**setup.config.to_dict(), "arm": arm.name, "seed": seed, "granularity": arm.granularity,
                     "max_evals": setup.max_evals}, versions())
    pool = setup.fitness_windows if setup.fitness_pool is None else setup.fitness_pool
    judge = final_fitness(setup.config, setup.context, setup.fitness_windows, store=store)
    deps = build_search(setup.config, setup.context, budget, pool, store, _roles(setup, arm, seed),
                        seed=seed, granularity=arm.granularity, on_event=on_event, judge=judge)
    if arm.tools:
        from tools.search_tools import SearchTools

        deps.tools = SearchTools(deps.fitness, deps.settings.stages[0], deps.layer_importance,
                                 timing=setup.config.timing == "on")
    started = time.perf_counter()
    try:
        if arm.kind == "blackbox":
            best = run_blackbox(deps, arm.optimizer, setup.max_evals)["best"]
        else:
            best = run_search(deps, run_id, cell_dir / "checkpoint.db", resume=resume)["best"]
    except BaseException:
        store.set_status("interrupted")
        raise
    search_s = time.perf_counter() - started
    plan = PruningPlan.from_list(best["plan"])  # finalize's champion: its fitness is the judge's, as the reference's
    test_ppl = plan_perplexity(setup.context, plan, setup.test_windows, setup.config.batch_size)
    curve = [row["best"] for row in store.generations()]  # best of each generation, on its own sample
    llm = store.token_totals()
    cell = {
        "arm": arm.name, "seed": seed, "granularity": arm.granularity, "best_fitness": best["fitness"],
        "test_ppl": test_ppl, "evaluations": deps.fitness.evaluations, "tokens_scored": deps.fitness.tokens_scored,
        "search_wall_s": search_s, "resumed": resume, "llm_calls": llm["calls"],
        "llm_tokens": llm["prompt"] + llm["completion"], "llm_latency_s": llm["latency"],
        "outcomes": store.outcome_counts(), "tool_calls": store.tool_call_counts(),
        "best_rates": best["rates"], "best_params": best["total_params"],
        "best_plan_key": best["plan_key"], "best_plan": best["plan"], "curve": curve,
    }
    store.set_status("finished", best_fitness=best["fitness"], best_key=best["plan_key"])
    done.write_text(json.dumps(cell, indent=2))
    return cell


def _roles(setup: AblationSetup, arm: Arm, seed: int):
    if arm.kind == "classic":
        return classic_roles()
    if arm.kind == "random":
        return random_roles()
    if arm.kind == "blackbox":
        return {}
    backend = setup.backend()
    backend.seed, backend.calls = 1000 * seed, 0  # the same sampling stream for a seed, whichever arm runs first
    return make_roles(backend, prompt_set(setup, arm), retries=setup.config.retries, llm_roles=arm.llm_roles,
                      tool_budget=setup.config.tool_budget if arm.tools else 0)


def prompt_set(setup: AblationSetup, arm: Arm) -> PromptSet:
    """The arm's own set (prompts:<set>), else the run's `--prompts` and `--prompt` overrides: the
    `llm` arm (and the headline's `self-pruner (default)` row) is then what `python main.py` runs."""
    if arm.prompts is not None:
        return PromptSet.load(arm.prompts)
    return PromptSet.load(setup.config.prompts, prompt_overrides(setup.config.prompt))
