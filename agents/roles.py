"""The four roles as plain functions, `(RoleContext) -> Proposal`, in a mapping the graph calls
by name. An ablation swaps the mapping and never edits the graph.

Which role is an LLM's and which is classic is decided here, once: an LLM role is its LLM method
with the classic operator bound as its fallback (`with_fallback`); every other role is the
classic operator itself.
"""
from __future__ import annotations

from typing import Callable

from agents import classic
from agents.chat import ChatBackend
from agents.llm_roles import LLMRoles
from agents.prompting import PromptSet
from agents.random_search import random_roles
from agents.types import ROLES, Proposal, Role, RoleContext

Roles = dict[str, Role]  # ROLES -> Role
CLASSIC: Roles = {"initializer": classic.initialize, "selector": classic.select, "crosser": classic.crossover,
                  "mutator": classic.mutate}


def with_fallback(llm_role: Callable[[RoleContext, Role], Proposal], fallback: Role) -> Role:
    """An LLM role that answers with `fallback` (and records why) when every attempt fails."""
    def role(ctx: RoleContext) -> Proposal:
        return llm_role(ctx, fallback)

    return role


def classic_roles() -> Roles:
    return dict(CLASSIC)


def parse_llm_roles(text: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """--llm-roles: a comma list of role names ("" = none: every role classic)."""
    names = tuple(n.strip() for n in (text.split(",") if isinstance(text, str) else text or ()) if n.strip())
    unknown = [n for n in names if n not in ROLES]
    if unknown:
        raise ValueError(f"--llm-roles: unknown role(s) {', '.join(unknown)}; use a comma list of {', '.join(ROLES)}")
    return names


def uses_llm(agent: str, llm_roles: str | tuple[str, ...]) -> bool:
    """Whether a search needs a chat backend at all (no server is started when it does not)."""
    return agent != "classic" and bool(parse_llm_roles(llm_roles))


def make_roles(backend: ChatBackend | None, prompts: PromptSet | None = None, retries: int = 1,
               llm_roles: str | tuple[str, ...] = ROLES, tool_budget: int = 0) -> Roles:
    """tool_budget: tool calls an LLM role may make before answering (0: none; agents/tool_loop.py)."""
    names = parse_llm_roles(llm_roles)
    if backend is None or not names:
        return classic_roles()
    llm = LLMRoles(backend, prompts or PromptSet.load(), retries=retries, tool_budget=tool_budget)
    methods = {"initializer": llm.initialize, "selector": llm.select, "crosser": llm.crossover, "mutator": llm.mutate}
    return {role: with_fallback(methods[role], CLASSIC[role]) if role in names else CLASSIC[role] for role in ROLES}


__all__ = ["CLASSIC", "Roles", "classic_roles", "make_roles", "parse_llm_roles", "random_roles", "uses_llm",
           "with_fallback"]
