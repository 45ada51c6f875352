"""The search's capabilities as tools an LLM role can call (LangChain `StructuredTool`s, each with an
argument schema and a description the model reads): structured pruning, fitness evaluation, layer
sensitivity, timing, and the population.

Thin wrappers over the engine, made per role call (`for_mutator`): a tool names a child by its
index in the role's list and the numbered moves of its prompt, so what it tries is exactly what the
final answer can say. Every call is recorded by the caller (agents/tool_loop.py) in `run.db`
(`tool_calls`); fitness goes through the search's own evaluator, so a screened plan is counted and
recorded like any evaluation and the generation's screen reuses its score (same plan, same sample).

Costs on SmolLM2-135M, 2 CPU cores: `apply_moves`, `layer_sensitivity`, `population`: under a
millisecond; `screen_children`: one cheapest-stage scoring per child (~0.3 s at 1 x 128 tokens,
cached); `measure_latency`: a sliced copy of the model and a timed prefill (~1 s, cached per plan; refused
where the copy would not fit beside the dense model, e.g. at 70B: `evaluation.fitness.pruned_copy_fits`).
"""
from __future__ import annotations

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from pruning.genome import PruningPlan

MAX_SCREENED = 3  # children per screen_children call


class ChildMoves(BaseModel):
    child: int = Field(description="index of the parent in your list (its child gets the moves)")
    moves: list[int] = Field(description="move numbers from the numbered list, 1 to 3 of them")


class ScreenInput(BaseModel):
    children: list[ChildMoves] = Field(description=f"up to {MAX_SCREENED} children to score")


class NoInput(BaseModel):
    pass


class SearchTools:
    """What the tools work on: the search's evaluator, its cheapest stage, the layer facts, and the
    pruning context (for timing). One per search; `for_mutator` makes one role call's tools."""

    def __init__(self, fitness, stage, layer_importance: list[tuple[float, float]], timing: bool = True):
        self.fitness, self.stage, self.layer_importance, self.timing = fitness, stage, layer_importance, timing
        self._latency: dict[str, float] = {}
        self._dense_latency: float | None = None

    def for_mutator(self, ctx, moves: list) -> list[StructuredTool]:
        """Tools over this mutator call's parents (`ctx.plans`) and numbered moves."""
        space, move_space = ctx.space, ctx.move_space

        def child_plan(child: int, picks: list[int]) -> tuple[PruningPlan, list[str]]:
            if not 0 <= child < len(ctx.plans):
                raise ValueError(f"child must be 0..{len(ctx.plans) - 1}, not {child}")
            if not 1 <= len(picks) <= 3:
                raise ValueError(f"give 1 to 3 move numbers, not {len(picks)}")
            plan, notes = ctx.plans[child], []
            for pick in picks:
                if not 0 <= pick < len(moves):
                    raise ValueError(f"move numbers are 0..{len(moves) - 1}, not {pick}")
                if move_space.legal(plan, moves[pick]):
                    plan = move_space.apply(plan, moves[pick])
                else:
                    notes.append(f"move {pick} does not fit (it would empty a module): skipped")
            return plan, notes

        def apply_moves(child: int, moves: list[int]) -> dict:
            plan, notes = child_plan(child, moves)
            rates = [round(r, 3) for r in space.realised_genome(plan, "layer").rates]
            return {"child": child, "total_params": space.total_params(plan),
                    "budget_params": ctx.budget.target_params, "layer_rates": rates, "notes": notes}

        def screen_children(children: list[ChildMoves]) -> dict:
            if not 1 <= len(children) <= MAX_SCREENED:
                raise ValueError(f"screen 1 to {MAX_SCREENED} children per call, not {len(children)}")
            children = [c if isinstance(c, ChildMoves) else ChildMoves(**c) for c in children]
            plans, notes = [], []
            for item in children:
                plan, n = child_plan(item.child, item.moves)
                plans.append(plan)
                notes += n
            parents = sorted({item.child for item in children})
            scored = self.fitness.score_many(plans + [ctx.plans[p] for p in parents], ctx.generation, 0, self.stage)
            return {"fitness": [round(s.value, 5) for s in scored[: len(plans)]],
                    "parents_fitness": {p: round(s.value, 5) for p, s in zip(parents, scored[len(plans):])},
                    "sample": f"{self.stage.label()} tokens, this generation's first screen (lower is better)",
                    "notes": notes}

        def layer_sensitivity() -> dict:
            return {"per_layer": [{"layer": i, "attention": round(a, 3), "mlp": round(m, 3)}
                                  for i, (a, m) in enumerate(self.layer_importance)],
                    "meaning": "importance of each layer's attention and MLP units, mean 1: prune less where higher"}

        def measure_latency(child: int, moves: list[int]) -> dict:
            plan, notes = child_plan(child, moves)
            dense_params, params = space.shape.total_params(), space.total_params(plan)
            if not self.timing:
                return {"ideal_speedup": round(dense_params / params, 3), "notes": notes + ["timing is off"]}
            seconds = self._time(plan)
            return {"prefill_s": round(seconds, 4), "dense_prefill_s": round(self._dense(), 4),
                    "speedup": round(self._dense() / seconds, 3), "ideal_speedup": round(dense_params / params, 3),
                    "notes": notes}

        def population() -> dict:
            return {"members": [{"index": i, "fitness": c.fitness, "origin": c.origin,
                                 "rates": [round(r, 3) for r in c.rates]} for i, c in enumerate(ctx.population)],
                    "generation": ctx.generation}

        return [
            StructuredTool.from_function(apply_moves, name="apply_moves", args_schema=ChildMoves,
                                         description="Apply move numbers to one parent; returns the child's parameter "
                                                     "count and per-layer rates (structured pruning, no scoring)."),
            StructuredTool.from_function(screen_children, name="screen_children", args_schema=ScreenInput,
                                         description=f"Score up to {MAX_SCREENED} candidate children (parent + moves) "
                                                     "on a small sample; lower fitness is better. Costs evaluations."),
            StructuredTool.from_function(layer_sensitivity, name="layer_sensitivity", args_schema=NoInput,
                                         description="Per-layer importance of attention and MLP (mean 1)."),
            StructuredTool.from_function(measure_latency, name="measure_latency", args_schema=ChildMoves,
                                         description="Measured prefill latency of a child against the dense model, "
                                                     "beside the ideal speed-up (parameter ratio)."),
            StructuredTool.from_function(population, name="population", args_schema=NoInput,
                                         description="The current population: fitness, origin and rates per member."),
        ]

    # -- timing --------------------------------------------------------------------------------
    def _time(self, plan: PruningPlan) -> float:
        from evaluation.fitness import pruned_copy_fits

        key = plan.key()
        if key not in self._latency:
            if not pruned_copy_fits(self.fitness.context, plan):  # at 70B a second copy would run out of memory
                raise ValueError("a pruned copy of the model does not fit beside the dense one here: "
                                 "latency cannot be measured; use ideal_speedup")
            model = self.fitness.context.prune(plan)
            self._latency[key] = _prefill_seconds(model)
            del model
        return self._latency[key]

    def _dense(self) -> float:
        if self._dense_latency is None:
            self._dense_latency = _prefill_seconds(self.fitness.context.model)
        return self._dense_latency


def _prefill_seconds(model, seqlen: int = 128, repeats: int = 3) -> float:
    """Median prefill of one 128-token window (CUDA events on a GPU through time_model's clock)."""
    from evaluation.timing import time_model

    result = time_model(model, batch_sizes=(1,), seqlens=(seqlen,), decode_tokens=1, repeats=repeats, warmup=1)
    return result["prefill"][f"1x{seqlen}"]["median_s"]
