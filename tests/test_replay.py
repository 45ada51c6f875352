"""Replay and run listing render a recorded run, including failed and fallback calls."""
from rich.console import Console

from store.run_store import RunStore
from tests.search_fixtures import llm_roles, run_tiny
from tests.test_search import CHILDREN, GOOD_INIT, MUTANTS, PAIRS
from ui.replay import list_runs, replay


def render(fn, *args, **kwargs) -> str:
    console = Console(record=True, width=220)
    fn(console, *args, **kwargs)
    return console.export_text()


def test_replay_shows_population_calls_and_fallbacks(tmp_path):
    answers = [GOOD_INIT, PAIRS, CHILDREN, "garbage", "{not json", PAIRS, CHILDREN, MUTANTS]
    run_tiny(tmp_path, llm_roles(answers), generations=2)
    store = RunStore(tmp_path / "run.db")
    text = render(replay, store, speed=0)
    for expected in ("generation 0: population", "generation 2: population", "llm:initializer", "fallback",
                     "invalid", "the answer is not valid JSON", "best per generation", "status running"):
        assert expected in text, expected
    only_mutator = render(replay, store, generation=1, role="mutator", speed=0)
    assert "mutator" in only_mutator and "crosser" not in only_mutator and "generation 2" not in only_mutator
    prompts = render(replay, store, generation=0, role="initializer", speed=0, full_prompts=True)
    assert "initializer prompt" in prompts and "You are pruning the language model" in prompts


def test_replay_of_an_unfinished_generation(tmp_path):
    store = RunStore(tmp_path / "run.db")
    store.start_run("killed", "tiny", "rate 0.3", "fake", {}, {})
    store.record_call({"role": "initializer", "backend": "fake", "prompt_set": "default", "attempt": 1,
                       "outcome": "error", "error": "TimeoutError", "generation": 0})
    text = render(replay, store, speed=0)
    assert "generation 0: not finished" in text and "TimeoutError" in text


def test_runs_lists_the_run(tmp_path):
    run_tiny(tmp_path, llm_roles([GOOD_INIT, PAIRS, CHILDREN, MUTANTS]), generations=1)
    text = render(list_runs, [RunStore(tmp_path / "run.db")])
    assert "test" in text and "tiny" in text and "rate 0.3" in text and "running" in text
