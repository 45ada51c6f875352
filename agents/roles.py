"""Role implementations behind one interface, so an ablation swaps implementations and never
edits the graph: `initialize(ctx)`, `select(ctx)`, `crossover(ctx, pairs)`, `mutate(ctx, genomes, keys)`."""
from __future__ import annotations

from pruning.genome import Genome

from agents import classic
from agents.chat import ChatBackend
from agents.llm_roles import LLMRoles
from agents.prompting import PromptSet
from agents.types import RoleContext, RoleResult


class ClassicRoles:
    name = "classic"

    def initialize(self, ctx: RoleContext) -> RoleResult:
        return classic.initialize(ctx)

    def select(self, ctx: RoleContext) -> RoleResult:
        return classic.select(ctx)

    def crossover(self, ctx: RoleContext, pairs: list[tuple[int, int]]) -> RoleResult:
        return classic.crossover(ctx, pairs)

    def mutate(self, ctx: RoleContext, genomes: list[Genome], parent_keys: list[str]) -> RoleResult:
        return classic.mutate(ctx, genomes, parent_keys)


def make_roles(backend: ChatBackend | None, prompts: PromptSet | None = None, retries: int = 1,
               llm_roles: tuple[str, ...] = ("initializer", "selector", "crosser", "mutator")):
    if backend is None:
        return ClassicRoles()
    return LLMRoles(backend, prompts or PromptSet.load(), retries=retries, llm_roles=llm_roles)
