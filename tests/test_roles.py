"""Roles are plain functions in a mapping; which ones an LLM plays is decided in one place."""
import pytest
from langchain_core.messages import AIMessage

from agents import classic
from agents.chat import ChatBackend
from agents.roles import CLASSIC, make_roles, parse_llm_roles, uses_llm
from agents.types import ROLES
from tests.search_fixtures import fake_backend


def test_no_llm_roles_means_the_classic_functions_and_no_backend():
    assert make_roles(None) == CLASSIC
    assert make_roles(fake_backend(["x"]), llm_roles="") == CLASSIC
    assert not uses_llm("local", "") and not uses_llm("classic", "initializer") and uses_llm("local", "mutator")


def test_only_the_named_roles_are_the_llms():
    roles = make_roles(fake_backend(["x"]), llm_roles="initializer,mutator")
    assert set(roles) == set(ROLES)
    assert roles["selector"] is classic.select and roles["crosser"] is classic.crossover
    assert roles["initializer"] is not classic.initialize and roles["mutator"] is not classic.mutate


def test_unknown_role_names_are_refused():
    with pytest.raises(ValueError, match="unknown role\\(s\\) critic"):
        parse_llm_roles("initializer,critic")


class Recording:
    """A chat model that records what each call was bound with."""

    def __init__(self):
        self.bound = []

    def bind(self, **kwargs):
        self.bound.append(kwargs)
        return self

    def invoke(self, prompt):
        return AIMessage(content="{}")


def test_every_backend_gets_a_per_call_seed():
    remote = ChatBackend(name="url", chat=Recording(), seed=1000)
    remote.ask("p", schema={"type": "object"})
    remote.ask("p")
    assert [b["seed"] for b in remote.chat.bound] == [1001, 1002]
    local = ChatBackend(name="local", chat=Recording(), grammar=True, seed=7)
    local.ask("p", grammar="root ::= \"x\"")
    assert local.chat.bound[0]["extra_body"]["seed"] == 8
