"""Transport errors are retried with backoff by the client, recorded apart from re-prompts, and
never become a fallback to the classic operator: a scripted OpenAI-compatible server in its own
process answers the first requests with 429 and 503."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.chat import make_backend
from agents.prompting import PromptSet
from agents.roles import make_roles

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scripted(tmp_path):
    """start(fail=[...], tool_turns=[...]) -> (base URL, log path) of a scripted server; stopped after the test."""
    processes = []

    def start(fail: list[int], tool_turns: list | None = None, delay: float = 0.0):
        script, port, log = tmp_path / "script.json", tmp_path / "port", tmp_path / "requests.log"
        script.write_text(json.dumps({"fail": fail, "tool_turns": tool_turns or [], "delay": delay}))
        processes.append(subprocess.Popen([sys.executable, "-m", "tests.scripted_server", str(script), str(port),
                                           str(log)], cwd=REPO))
        deadline = time.monotonic() + 30
        while not port.exists() or not port.read_text():
            assert time.monotonic() < deadline, "scripted server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port.read_text()}/v1", log

    yield start
    for process in processes:
        process.kill()
        process.wait()


def test_rate_limits_and_server_errors_are_retried_not_fallen_back(tmp_path, scripted):
    from tests.search_fixtures import run_tiny

    url, log = scripted([429, 429, 503])
    backend = make_backend(url + "#scripted", max_tokens=256, timeout=30)
    roles = make_roles(backend, PromptSet.load("moves"), retries=1)
    final, deps = run_tiny(tmp_path / "run", roles, generations=1)
    calls = deps.store.calls()
    assert calls and not [c for c in calls if c["outcome"] in ("fallback", "error")]
    assert sum(c["transport_retries"] or 0 for c in calls) == 3  # the three failures, each retried once
    first = calls[0]
    assert first["transport_retries"] == 3 and "retried-transport" in first["notes"]
    assert log.read_text().split()[:4] == ["429", "429", "503", "200"]
    assert final["best"] is not None


def test_a_dead_endpoint_is_an_error_after_the_retries(tmp_path, scripted):
    url, _ = scripted([503] * 10)  # more failures than the client retries
    backend = make_backend(url + "#scripted", max_tokens=64, timeout=30)
    with pytest.raises(Exception) as err:
        backend.ask("hello")
    assert getattr(err.value, "transport_retries", 0) == 4  # agents/transport.TRANSPORT_RETRIES


def test_the_mutator_calls_tools_before_answering(tmp_path, scripted):
    """Tool calls (good, unknown, malformed, over budget) are executed or answered with an error, all
    recorded and replayed; a screened child's score is an ordinary evaluation; the answer stays valid."""
    import io

    from rich.console import Console

    from graphs.runner import run_search
    from tests.search_fixtures import tiny_search_deps
    from tools.search_tools import SearchTools
    from ui.replay import replay

    screen = json.dumps({"children": [{"child": 0, "moves": [0, 1]}, {"child": 1, "moves": [2]}]})
    turns = [[{"name": "screen_children", "arguments": screen}, {"name": "apply_moves", "arguments": "{not json"}],
             [{"name": "fly", "arguments": "{}"}, {"name": "layer_sensitivity", "arguments": "{}"},
              {"name": "population", "arguments": "{}"}]]  # the fifth call: over the budget of 4, refused
    url, _ = scripted([], turns)
    backend = make_backend(url + "#scripted", max_tokens=256, timeout=30)
    roles = make_roles(backend, PromptSet.load("moves"), retries=1, llm_roles="mutator", tool_budget=4)
    deps = tiny_search_deps(tmp_path / "run", roles, generations=1)
    deps.tools = SearchTools(deps.fitness, deps.settings.stages[0], deps.layer_importance, timing=False)
    run_search(deps, "test", tmp_path / "run" / "checkpoint.db")
    calls = deps.store.tool_calls()
    assert [c["tool"] for c in calls] == ["screen_children", "apply_moves", "fly", "layer_sensitivity", "population"]
    assert [bool(c["valid"]) for c in calls] == [True, False, False, True, False]
    assert "malformed" in calls[1]["error"] and "unknown tool 'fly'" in calls[2]["error"]
    assert "budget" in calls[4]["error"]  # the budget holds: the loop ends there
    screened = json.loads(calls[0]["result"])["fitness"]
    assert len(screened) == 2 and all(v > 0 for v in screened)
    assert deps.store.evaluation_count("kl:2x16:g1s0:seed0") >= 2  # the screened children are evaluations
    mutator = [c for c in deps.store.calls("mutator") if c["generation"] == 1]
    assert [c["outcome"] for c in mutator][-1] in ("used", "repaired")  # the answer after the tools
    assert any(c["outcome"] == "tools" for c in mutator)
    out = io.StringIO()
    replay(Console(file=out, width=200), deps.store, speed=0)
    assert "tool calls" in out.getvalue() and "screen_children" in out.getvalue()


def test_every_role_calls_tools(tmp_path, scripted):
    """The initializer, selector and crosser look before they leap too: each gets the tools that fit
    what it makes (the selector, which makes no children, the population, the sensitivity and a
    member's latency), and what they try is what their answer could say."""
    from graphs.runner import run_search
    from tests.search_fixtures import tiny_search_deps
    from tools.search_tools import SearchTools

    def screen(child, picks):
        return {"name": "screen_children", "arguments": json.dumps({"children": [{"child": child, "moves": picks}]})}

    turns = [[screen(0, [0, 1]), {"name": "apply_moves", "arguments": json.dumps({"child": 1, "moves": [2]})}], [],
             [{"name": "member_latency", "arguments": json.dumps({"member": 0})},
              {"name": "screen_children", "arguments": "{}"}], [],  # the selector has no children to screen
             [screen(0, [1])], []]
    url, _ = scripted([], turns)
    backend = make_backend(url + "#scripted", max_tokens=256, timeout=30)
    roles = make_roles(backend, PromptSet.load("moves"), retries=1, tool_budget=4)
    deps = tiny_search_deps(tmp_path / "run", roles, generations=1)
    deps.tools = SearchTools(deps.fitness, deps.settings.stages[0], deps.layer_importance, timing=False)
    run_search(deps, "test", tmp_path / "run" / "checkpoint.db")
    calls = deps.store.tool_calls()
    assert [(c["role"], c["tool"], bool(c["valid"])) for c in calls] == [
        ("initializer", "screen_children", True), ("initializer", "apply_moves", True),
        ("selector", "member_latency", True), ("selector", "screen_children", False),
        ("crosser", "screen_children", True)]
    init_screen, applied = json.loads(calls[0]["result"]), json.loads(calls[1]["result"])
    assert len(init_screen["fitness"]) == 1 and len(init_screen["parents_fitness"]) == 1  # beside uniform
    assert abs(applied["total_params"] - applied["budget_params"]) < 0.02 * applied["budget_params"]  # on the budget
    assert json.loads(calls[2]["result"])["ideal_speedup"] > 1
    assert "unknown tool 'screen_children'" in calls[3]["error"]
    cross = json.loads(calls[4]["result"])
    assert len(cross["fitness"]) == 1 and len(cross["parents_fitness"]) in (1, 2)  # beside both parents
    for role in ("initializer", "selector", "crosser"):
        answers = [c for c in deps.store.calls(role) if c["outcome"] != "tools"]
        assert answers and answers[-1]["outcome"] in ("used", "repaired", "retried"), role


def test_crosser_and_mutator_ask_at_once(tmp_path, scripted):
    """With a backend that serves two requests at once, a generation's crosser and mutator calls overlap
    in time; each call's seed comes from its name, so it does not depend on what runs beside it."""
    from agents.chat import ChatBackend
    from graphs.runner import run_search
    from tests.search_fixtures import tiny_search_deps

    url, _ = scripted([], delay=0.5)
    backend = make_backend(url + "#scripted", max_tokens=256, timeout=30, slots=2)
    deps = tiny_search_deps(tmp_path / "run", make_roles(backend, PromptSet.load("moves")), generations=1)
    deps.parallel_llm = True
    run_search(deps, "test", tmp_path / "run" / "checkpoint.db")
    spans = {c["role"]: (c["created"] - c["latency_s"], c["created"]) for c in deps.store.calls()
             if c["generation"] == 1 and c["role"] in ("crosser", "mutator")}
    assert spans["mutator"][0] < spans["crosser"][1] and spans["crosser"][0] < spans["mutator"][1]  # they overlap
    one, two = ChatBackend(name="a", chat=None, seed=7), ChatBackend(name="b", chat=None, seed=7)
    two._seed("selector:g1:a1")  # another call first: the counter moves, the named seed does not
    assert one._seed("mutator:g1:a1") == two._seed("mutator:g1:a1") != one._seed("mutator:g1:a2")


def test_agent_tools_auto_asks_the_backend(scripted):
    """`--agent-tools auto`: on when a one-request probe comes back with a tool call, off when it does
    not; `on` / `off` are taken as said; no backend, no tools."""
    from agents.tool_loop import decide_tools

    url, _ = scripted([], [[{"name": "ping", "arguments": json.dumps({"text": "ok"})}]])
    backend = make_backend(url + "#scripted", max_tokens=64, timeout=30)
    on, why = decide_tools("auto", backend)
    assert on and "probe with a tool call" in why
    on, why = decide_tools("auto", backend)  # the script's only tool turn is spent: a plain answer now
    assert not on and "without a tool call" in why
    assert decide_tools("off", backend) == (False, "--agent-tools off")
    assert decide_tools("on", backend)[0] and not decide_tools("auto", None)[0]
