"""The ablation runner on the tiny random Llama: arms, equal budgets, resumable cells, the
comparison files; move-based and no-history prompt sets; random search."""
import json

import matplotlib.image
import pytest

from agents.parsing import AnswerError, parse_choices
from agents.prompting import PromptError, PromptSet
from agents.roles import random_roles
from agents.schemas import choices_grammar
from assembly.config import RunConfig
from experiments.ablation import AblationSetup, parse_arm, prompt_set, run_cell, uniform_reference
from pruning.data import TokenWindows
from store.run_store import RunStore
from tests.search_fixtures import fake_backend, llm_roles, run_tiny, tiny_search_deps
from tests.test_search import PAIRS, assert_on_budget
from tests.tiny import tiny_inputs
from ui.ablation_report import write_ablation_report


def tiny_setup(tmp_path, backend=None) -> AblationSetup:
    deps = tiny_search_deps(tmp_path / "deps", random_roles())
    return AblationSetup(config=RunConfig(model="tiny", population=4, generations=2, offspring=4),
                         context=deps.fitness.context, budgets={"layer": deps.budget},
                         fitness_windows=deps.fitness.pool, fitness_pool=deps.fitness.pool,
                         test_windows=TokenWindows(tiny_inputs(2, 32, seed=9), "t", "test"),
                         backend_factory=(lambda: backend) if backend else None)


def test_parse_arm_names_and_errors():
    assert parse_arm("llm-init").llm_roles == ("initializer",)
    assert parse_arm("prompts:moves").prompts == "moves"
    assert parse_arm("cma").optimizer == "CMA" and parse_arm("ng:DE").optimizer == "DE"
    assert parse_arm("classic@module").granularity == "module"
    with pytest.raises(ValueError, match="unknown arm 'genetic'"):
        parse_arm("genetic")
    with pytest.raises(ValueError, match="unknown Nevergrad optimizer"):
        parse_arm("ng:NoSuchOptimizer")
    with pytest.raises(PromptError):
        parse_arm("prompts:no-such-set")


def test_the_llm_arm_uses_the_runs_prompt_set(tmp_path):
    """`llm` (the headline's `self-pruner (default)` row) is what `python main.py` runs: the run's
    --prompts (default `moves`), not the genome-writing `default` set; prompts:<set> keeps its own."""
    setup = tiny_setup(tmp_path)
    assert RunConfig().prompts == "moves"
    assert prompt_set(setup, parse_arm("llm")).answer == "moves"
    assert prompt_set(setup, parse_arm("prompts:default")).answer != "moves"
    setup.config = RunConfig(model="tiny", prompts="diverse")
    assert prompt_set(setup, parse_arm("llm")).name == "diverse"


def test_two_arms_two_seeds_write_the_comparison(tmp_path):
    setup = tiny_setup(tmp_path)
    reference = uniform_reference(setup, tmp_path)
    cells = [run_cell(setup, parse_arm(arm), seed, tmp_path) for arm in ("classic", "cma") for seed in (0, 1)]
    for cell in cells:
        assert cell["evaluations"] > 0 and cell["tokens_scored"] > 0 and len(cell["curve"]) >= 2
        assert cell["best_fitness"] > 0  # on the fixed windows, like the reference's
        assert cell["best_params"] <= setup.budgets["layer"].target_params
    # CMA-ES: its asks, plus the survivors re-scored on each batch's sample
    assert all(c["evaluations"] >= setup.max_evals for c in cells if c["arm"] == "cma")
    rows = write_ablation_report(tmp_path, cells, ["classic", "cma"], {"model": "tiny", "max_evals": setup.max_evals},
                                 reference)
    assert [r["arm"] for r in rows] == ["classic", "cma"] and all(r["seeds"] == [0, 1] for r in rows)
    table = (tmp_path / "ablation.md").read_text()
    assert "| classic | 2 |" in table and "| cma | 2 |" in table and "uniform wanda-sp: fitness" in table.lower()
    data = json.loads((tmp_path / "ablation.json").read_text())
    assert len(data["cells"]) == 4 and data["reference"]["uniform_fitness"] > 0
    assert matplotlib.image.imread(tmp_path / "convergence.png").shape[0] > 100
    # a finished cell is not run again
    again = run_cell(setup, parse_arm("cma"), 0, tmp_path)
    assert again == cells[2]


def test_blackbox_cell_resumes_from_its_database(tmp_path):
    """A killed black-box cell (no cell.json yet) replays its asks from the fitness cache."""
    setup = tiny_setup(tmp_path)
    reference = uniform_reference(setup, tmp_path)
    first = run_cell(setup, parse_arm("cma"), 3, tmp_path)
    (tmp_path / "cells" / "cma-s3" / "cell.json").unlink()  # as if killed before the end
    second = run_cell(setup, parse_arm("cma"), 3, tmp_path)
    assert second["resumed"] and second["best_fitness"] == first["best_fitness"]
    assert first["evaluations"] >= setup.max_evals and second["evaluations"] == 0  # all from the run database
    # generations are closed with the graph's bookkeeping: real survivors and their spread
    generations = RunStore(tmp_path / "cells" / "cma-s3" / "run.db").generations()
    assert len(generations) == -(-setup.max_evals // setup.config.population)  # the last batch may be short
    assert all(len(json.loads(g["population"])) == setup.config.population for g in generations)
    assert all(g["diversity"] > 0 and g["mean"] >= g["best"] for g in generations)


def test_random_search_draws_varied_genomes_on_budget(tmp_path):
    _, deps = run_tiny(tmp_path, random_roles(), generations=2)
    candidates = deps.store.candidates()
    assert {c["origin"] for c in candidates} == {"random", "seed:uniform"}  # every arm starts from the same seeds
    assert len({c["plan"] for c in candidates}) == len(candidates) == len(deps.fitness.known_keys())
    assert_on_budget(deps, candidates)


MOVES_INIT = json.dumps({"choices": [[0], [1, 2], [3, 4, 5], [6]]})
MOVES_CROSS = json.dumps({"choices": [[0], [6]]})
MOVES_MUTATE = json.dumps({"choices": [[1], [2, 3]]})


def test_move_based_prompt_set_drives_a_search(tmp_path):
    roles = llm_roles([MOVES_INIT, PAIRS, MOVES_CROSS, MOVES_MUTATE], prompts=PromptSet.load("moves"))
    _, deps = run_tiny(tmp_path, roles, generations=1)
    calls = deps.store.calls()
    # every answer parsed; "repaired" here because a proposal duplicated the uniform seed (initializer),
    # the answer had more or fewer items than asked (crosser: 1 pair of 4 children; mutator: 3 parents)
    notes = {c["role"]: json.loads(c["notes"]) for c in calls}
    assert {c["role"]: c["outcome"] for c in calls} == {
        "initializer": "repaired", "selector": "used", "crosser": "repaired", "mutator": "repaired"}
    assert notes["initializer"] == ["1 duplicate(s) of known or sibling configurations"]
    assert notes["mutator"] == ["1 item(s) missing", "1 filled by the classic operator"]
    mutator = next(c for c in calls if c["role"] == "mutator")
    assert "MLP unit" in mutator["prompt"] and "more in layer" in mutator["prompt"]
    # the first listed options are layer shifts (one layer a lot, the others evenly): the children the
    # answer picked ([1], [2, 3]) came from them, and are on the budget like every other (below)
    assert "\n0: prune" in mutator["prompt"] and "every other layer a little" in mutator["prompt"]
    init = next(c for c in calls if c["role"] == "initializer")
    assert "Moves you can make" in init["prompt"] and json.loads(init["parsed"]) == [[0], [1, 2], [3, 4, 5], [6]]
    origins = {c["origin"] for c in deps.store.candidates()}
    assert {"llm:initializer", "llm:crosser", "llm:mutator"} <= origins
    first_gen = [json.loads(c["genome"]) for c in deps.store.candidates() if c["origin"] == "llm:initializer"]
    assert all(len(set(g)) > 1 for g in first_gen)  # each move changed the uniform start
    assert_on_budget(deps, deps.store.candidates())


def test_move_answer_outside_the_list_is_retried_then_falls_back(tmp_path):
    bad = json.dumps({"choices": [[99]] * 4})
    roles = llm_roles([bad, bad, PAIRS, MOVES_CROSS, MOVES_MUTATE], prompts=PromptSet.load("moves"))
    _, deps = run_tiny(tmp_path, roles, generations=1)
    outcomes = [c["outcome"] for c in deps.store.calls("initializer")]
    assert outcomes == ["invalid", "invalid", "fallback"]
    assert "outside 0..15" in deps.store.calls("initializer")[0]["error"]


def test_parse_choices_and_grammar():
    assert parse_choices('{"choices": [[1, 2, 3, 4], [0]]}', 2, 5, 3) == ([[1, 2, 3], [0]], ["item 0: only the first 3 options used"])
    assert parse_choices("[2, 3]", 2, 5, 1)[0] == [[2], [3]]  # a flat list: one option each
    with pytest.raises(AnswerError, match="outside 0..4"):
        parse_choices('{"choices": [[5]]}', 1, 5, 1)
    grammar = choices_grammar(2, 12, 2)
    assert '"11"' in grammar and '"12"' not in grammar and grammar.count("item") == 3


def test_no_history_set_hides_the_ranking(tmp_path):
    answers = [json.dumps({"genomes": [[30, 20, 40, 30], [25, 35, 30, 30], [40, 30, 20, 30], [30, 30, 30, 30]]}),
               PAIRS, json.dumps({"genomes": [[31, 29, 35, 25], [20, 40, 30, 30]]}),
               json.dumps({"genomes": [[50, 10, 30, 30], [10, 50, 30, 30]]})]
    _, deps = run_tiny(tmp_path, llm_roles(answers, prompts=PromptSet.load("no-history")), generations=1)
    selector = deps.store.calls("selector")[0]["prompt"]
    listed = [line for line in selector.splitlines() if line[:1].isdigit() and ": " in line and "|" in line]
    indices = [int(line.split(":")[0]) for line in listed]
    assert sorted(indices) == list(range(4)) and indices != sorted(indices)  # all shown, not in rank order
    mutator = deps.store.calls("mutator")[0]["prompt"]
    assert "Population" not in mutator and "|" not in mutator  # no scored history at all
