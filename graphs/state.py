"""The search state: plain JSON-able data, so LangGraph's SQLite checkpointer can save it after
every node and `--resume` can continue a killed run."""
from __future__ import annotations

from typing import TypedDict


class SearchState(TypedDict, total=False):
    generation: int  # index of the generation being built (0 = the initial population)
    population: list[dict]  # Candidate dicts, evaluated, best first
    offspring: list[dict]  # Candidate dicts waiting for (or just given) a fitness
    pairs: list[list[int]]  # parent indices chosen by the selector
    best_history: list[float]  # best fitness after each generation
    stale: int  # generations in a row without improvement
    search_s: float  # search wall time so far, all sessions (--search-minutes)
    done: bool
    archive: list[dict]  # the seeds and each generation's best: finalize's champion is chosen among them
    best: dict | None  # the final best Candidate (set by finalize)
    final: dict | None  # what finalize measured
