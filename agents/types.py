"""What roles see and return. Plain data: the graph state stores these as dicts."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Callable

from pruning.budget import Budget
from pruning.genome import Genome
from pruning.space import PruningSpace

ROLES = ("initializer", "selector", "crosser", "mutator")


@dataclass
class Candidate:
    """A member of the population: a repaired genome, its plan key, its fitness."""

    rates: list[float]
    granularity: str
    plan_key: str
    plan: list[list[int]]
    total_params: int
    block_params: int
    origin: str
    generation: int
    parents: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fitness: float | None = None  # the score at the last fidelity stage it reached (lower is better)
    stage: int = -1  # that stage's index (-1: not scored yet); every stage's score is in run.db
    latency: float | None = None  # predicted prefill latency over the dense model's (--latency-weight only)
    raw_fitness: float | None = None  # with --latency-weight: the fitness before weighing (`fitness` is the objective)

    @property
    def genome(self) -> Genome:
        return Genome(self.granularity, tuple(self.rates))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Candidate":
        return cls(**data)


@dataclass
class CallRecord:
    role: str
    backend: str
    prompt_set: str
    attempt: int
    outcome: str  # used | repaired | retried | fallback (final) ; invalid | error (failed attempt)
    prompt: str = ""
    raw: str = ""
    parsed: object = None
    notes: list[str] = field(default_factory=list)
    error: str = ""
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation: int = 0
    transport_retries: int = 0  # requests the client repeated after 429 / 5xx / connection errors

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RoleContext:
    """Everything a role may look at. `population` is sorted best first (lower fitness)."""

    space: PruningSpace
    budget: Budget
    granularity: str
    population: list[Candidate]
    count: int  # how many genomes / pairs to return
    generation: int
    rng: random.Random
    known_keys: set[str]  # plan keys already in the population or evaluated
    model_name: str = ""
    layer_importance: list[tuple[float, float]] = field(default_factory=list)  # (attention, mlp), mean 1
    # what the crosser and the mutator work on: parent pairs (indices into population), genomes
    pairs: list[tuple[int, int]] = field(default_factory=list)
    genomes: list[Genome] = field(default_factory=list)
    parent_keys: list[str] = field(default_factory=list)  # the genomes' plan keys
    # exact moves (pruning/quanta.py): with a move space, the mutator moves parameter quanta between the
    # layers of `plans` and the crosser's children are put back on the budget in the same quanta
    move_space: object = None
    plans: list = field(default_factory=list)  # PruningPlan per genome in `genomes`
    tools: object = None  # tools.search_tools.SearchTools when the roles may call tools (--agent-tools)


@dataclass
class Proposal:
    """What a role returns: genomes (initializer, crosser, mutator) or parent pairs (selector),
    with every LLM call it made."""
    genomes: list[Genome] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # per genome: "llm:<role>" or "classic:<op>"
    parents: list[list[str]] = field(default_factory=list)  # per genome: parent plan keys
    calls: list[CallRecord] = field(default_factory=list)
    plans: list = field(default_factory=list)  # exact answers: PruningPlans on the budget (no repair)
    plan_origins: list[str] = field(default_factory=list)
    plan_parents: list[list[str]] = field(default_factory=list)
    tool_calls: list = field(default_factory=list)  # agents.tool_loop.ToolCall: what the role's tools were asked


Role = Callable[[RoleContext], Proposal]  # one of the four operators; the graph takes a mapping ROLES -> Role
