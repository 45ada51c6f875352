"""The same capabilities as LangChain tools, for agents that call tools themselves."""
from __future__ import annotations

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from pruning.genome import Genome
from pruning.repair import repair


class GenomeInput(BaseModel):
    rates: list[float] = Field(description="per-layer pruning rates (module granularity: attention rates, then MLP rates)")


def fitness_tool(evaluator, space, budget, granularity: str) -> StructuredTool:
    """`evaluate_pruning_rates`: repair the rates onto the budget, return fitness and parameters."""

    def evaluate_pruning_rates(rates: list[float]) -> dict:
        result = repair(Genome(granularity, tuple(rates)), space, budget)
        fitness = evaluator.evaluate(result.plan)
        return {"fitness": fitness.value, "kind": evaluator.kind, "total_params": result.total_params,
                "realised_rates": result.genome.to_list(), "repair_notes": result.notes}

    return StructuredTool.from_function(
        evaluate_pruning_rates, name="evaluate_pruning_rates", args_schema=GenomeInput,
        description="Prune the model with these per-layer rates (repaired onto the budget) and return its fitness "
                    "(lower is better) and realised parameter count.",
    )
