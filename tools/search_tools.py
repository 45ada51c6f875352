"""The search's capabilities as tools an LLM role can call (LangChain `StructuredTool`s, each with an
argument schema and a description the model reads): structured pruning, fitness evaluation, layer
sensitivity, timing, and the population.

Thin wrappers over the engine, made per role call (`for_role`; `for_mutator` for the exact mutator):
a tool names a child by its index in the role's list and the numbered moves (or, for the crosser,
the crossover option) of its prompt, so what it tries is exactly what the final answer can say.
The selector makes no children: it gets the population, the sensitivity and `member_latency`. Every call is recorded by the caller (agents/tool_loop.py) in `run.db`
(`tool_calls`); fitness goes through the search's own evaluator, so a screened plan is counted and
recorded like any evaluation and the generation's screen reuses its score (same plan, same sample).

Costs on SmolLM2-135M, 2 CPU cores: `apply_moves`, `layer_sensitivity`, `population`: under a
millisecond; `screen_children`: one cheapest-stage scoring per child (~0.3 s at 1 x 128 tokens,
cached); `measure_latency` / `member_latency`: a sliced copy of the model and a timed prefill (~1 s, cached per plan; refused
where the copy would not fit beside the dense model, e.g. at 70B: `evaluation.fitness.pruned_copy_fits`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from pruning.genome import PruningPlan

MAX_SCREENED = 3  # children per screen_children call


class ChildMoves(BaseModel):
    child: int = Field(description="index of the child in the list your prompt asks for")
    moves: list[int] = Field(description="numbers from your prompt's numbered list (moves or options)")


class ScreenInput(BaseModel):
    children: list[ChildMoves] = Field(description=f"up to {MAX_SCREENED} children to score")


class NoInput(BaseModel):
    pass


class MemberInput(BaseModel):
    member: int = Field(description="index of the member in the population list")


@dataclass
class Candidates:
    """What one role call may try: `count` children, each made by `build(child, picks)` from 1 to
    `max_picks` of `options` numbered choices (moves or crossover options) -> (plan on the budget,
    notes); `parents(child)`: the plans the child is compared with when screened."""

    count: int
    options: int
    max_picks: int
    build: Callable[[int, list[int]], tuple[PruningPlan, list[str]]]
    parents: Callable[[int], list[PruningPlan]]
    what: str  # how the role's prompt calls the choices ("move numbers", "option number")


class SearchTools:
    """What the tools work on: the search's evaluator, its cheapest stage, the layer facts, and the
    pruning context (for timing). One per search; `for_role` makes one role call's tools."""

    def __init__(self, fitness, stage, layer_importance: list[tuple[float, float]], timing: bool = True,
                 latency=None):
        """latency: evaluation.latency_table.LatencyTable when the run has one (--latency-weight)."""
        self.fitness, self.stage, self.layer_importance, self.timing = fitness, stage, layer_importance, timing
        self.latency = latency
        self._measured: dict[str, float] = {}  # plan key -> measured prefill seconds
        self._dense_latency: float | None = None

    def for_mutator(self, ctx, moves: list) -> list[StructuredTool]:
        """The mutator's tools: a child is its parent (`ctx.plans[child]`) plus 1 to 3 exact moves."""
        move_space = ctx.move_space

        def build(child: int, picks: list[int]) -> tuple[PruningPlan, list[str]]:
            plan, notes = ctx.plans[child], []
            for pick in picks:
                if move_space.legal(plan, moves[pick]):
                    plan = move_space.apply(plan, moves[pick])
                else:
                    notes.append(f"move {pick} does not fit (it would empty a module): skipped")
            return plan, notes

        return self.for_role(ctx, Candidates(len(ctx.plans), len(moves), 3, build, lambda c: [ctx.plans[c]],
                                             "move numbers"))

    def for_role(self, ctx, candidates: Candidates | None) -> list[StructuredTool]:
        """Tools over one role call's candidates (None: the selector, which makes no children; it gets
        the population, the sensitivity and each member's latency)."""
        space, c = ctx.space, candidates

        def child_plan(child: int, picks: list[int]) -> tuple[PruningPlan, list[str]]:
            if not 0 <= child < c.count:
                raise ValueError(f"child must be 0..{c.count - 1}, not {child}")
            if not 1 <= len(picks) <= c.max_picks:
                raise ValueError(f"give 1 to {c.max_picks} {c.what}, not {len(picks)}")
            for pick in picks:
                if not 0 <= pick < c.options:
                    raise ValueError(f"{c.what} are 0..{c.options - 1}, not {pick}")
            return c.build(child, list(picks))

        def apply_moves(child: int, moves: list[int]) -> dict:
            plan, notes = child_plan(child, moves)
            rates = [round(r, 3) for r in space.realised_genome(plan, "layer").rates]
            return {"child": child, "total_params": space.total_params(plan),
                    "budget_params": ctx.budget.target_params, "layer_rates": rates, "notes": notes}

        def screen_children(children: list[ChildMoves]) -> dict:
            if not 1 <= len(children) <= MAX_SCREENED:
                raise ValueError(f"screen 1 to {MAX_SCREENED} children per call, not {len(children)}")
            children = [x if isinstance(x, ChildMoves) else ChildMoves(**x) for x in children]
            plans, notes = [], []
            for item in children:
                plan, n = child_plan(item.child, item.moves)
                plans.append(plan)
                notes += n
            parents: dict[str, PruningPlan] = {}
            for item in children:
                for plan in c.parents(item.child):
                    parents.setdefault(plan.key(), plan)
            scored = self.fitness.score_many(plans + list(parents.values()), ctx.generation, 0, self.stage)
            result = {"fitness": [round(s.value, 5) for s in scored[: len(plans)]],
                      "parents_fitness": [round(s.value, 5) for s in scored[len(plans):]],
                      "sample": f"{self.stage.label()} tokens, this generation's first screen (lower is better)",
                      "notes": notes}
            if self.latency is not None:
                result["predicted_latency"] = [round(self.latency.ratio(space, p), 4) for p in plans]
            return result

        def layer_sensitivity() -> dict:
            return {"per_layer": [{"layer": i, "attention": round(a, 3), "mlp": round(m, 3)}
                                  for i, (a, m) in enumerate(self.layer_importance)],
                    "meaning": "importance of each layer's attention and MLP units, mean 1: prune less where higher"}

        def measure_latency(child: int, moves: list[int]) -> dict:
            plan, notes = child_plan(child, moves)
            return self._latency_of(space, plan) | {"notes": notes}

        def member_latency(member: int) -> dict:
            if not 0 <= member < len(ctx.population):
                raise ValueError(f"member must be 0..{len(ctx.population) - 1}, not {member}")
            return self._latency_of(space, PruningPlan.from_list(ctx.population[member].plan))

        def population() -> dict:
            return {"members": [{"index": i, "fitness": m.fitness, "origin": m.origin,
                                 "rates": [round(r, 3) for r in m.rates]} for i, m in enumerate(ctx.population)],
                    "generation": ctx.generation}

        common = [
            StructuredTool.from_function(layer_sensitivity, name="layer_sensitivity", args_schema=NoInput,
                                         description="Per-layer importance of attention and MLP (mean 1)."),
            StructuredTool.from_function(population, name="population", args_schema=NoInput,
                                         description="The current population: fitness, origin and rates per member."),
        ]
        if c is None:
            return common + [StructuredTool.from_function(
                member_latency, name="member_latency", args_schema=MemberInput,
                description="Measured prefill latency of one population member against the dense model, beside "
                            "the ideal speed-up (parameter ratio).")]
        return [
            StructuredTool.from_function(apply_moves, name="apply_moves", args_schema=ChildMoves,
                                         description=f"Make child number `child` from 1 to {c.max_picks} {c.what} "
                                                     "of your list; returns its parameter count and per-layer rates "
                                                     "(structured pruning, no scoring)."),
            StructuredTool.from_function(screen_children, name="screen_children", args_schema=ScreenInput,
                                         description=f"Score up to {MAX_SCREENED} candidate children (child + "
                                                     f"{c.what}) on a small sample beside the plans they come "
                                                     "from; lower fitness is better. Costs evaluations."),
            *common,
            StructuredTool.from_function(measure_latency, name="measure_latency", args_schema=ChildMoves,
                                         description="Measured prefill latency of a child against the dense model, "
                                                     "beside the ideal speed-up (parameter ratio)."),
        ]

    def _latency_of(self, space, plan: PruningPlan) -> dict:
        dense_params, params = space.shape.total_params(), space.total_params(plan)
        out = {"ideal_speedup": round(dense_params / params, 3)}
        if self.latency is not None:
            out["predicted_latency_vs_dense"] = round(self.latency.ratio(space, plan), 4)
        if not self.timing:
            return out | {"timing": "off"}
        seconds = self._time(plan)
        return out | {"prefill_s": round(seconds, 4), "dense_prefill_s": round(self._dense(), 4),
                      "speedup": round(self._dense() / seconds, 3)}

    # -- timing --------------------------------------------------------------------------------
    def _time(self, plan: PruningPlan) -> float:
        from evaluation.fitness import pruned_copy_fits

        key = plan.key()
        if key not in self._measured:
            if not pruned_copy_fits(self.fitness.context, plan):  # at 70B a second copy would run out of memory
                raise ValueError("a pruned copy of the model does not fit beside the dense one here: "
                                 "latency cannot be measured; use ideal_speedup")
            model = self.fitness.context.prune(plan)
            self._measured[key] = _prefill_seconds(model)
            del model
        return self._measured[key]

    def _dense(self) -> float:
        if self._dense_latency is None:
            self._dense_latency = _prefill_seconds(self.fitness.context.model)
        return self._dense_latency


def _prefill_seconds(model, seqlen: int = 128, repeats: int = 3) -> float:
    """Median prefill of one 128-token window (CUDA events on a GPU through time_model's clock)."""
    from evaluation.timing import time_model

    result = time_model(model, batch_sizes=(1,), seqlens=(seqlen,), decode_tokens=1, repeats=repeats, warmup=1)
    return result["prefill"][f"1x{seqlen}"]["median_s"]
