"""The search graph on the tiny random Llama, with classic and (fake) LLM operators."""
import json

from agents.roles import classic_roles
from tests.search_fixtures import llm_roles, run_tiny

GOOD_INIT = json.dumps({"genomes": [[30, 20, 40, 30], [25, 35, 30, 30], [40, 30, 20, 30], [30, 30, 35, 25]]})
PAIRS = json.dumps({"pairs": [[0, 1], [1, 2], [0, 2], [2, 3]]})
CHILDREN = json.dumps({"genomes": [[31, 29, 35, 25], [20, 40, 30, 30]]})
MUTANTS = json.dumps({"genomes": [[50, 10, 30, 30], [10, 50, 30, 30]]})


def assert_on_budget(deps, candidates):
    unit = max(deps.space.mlp_unit_params(i) for i in range(deps.space.num_layers))
    for cand in candidates:
        assert cand["total_params"] <= deps.budget.target_params
        assert deps.budget.target_params - cand["total_params"] < unit


def test_classic_search_evolves_and_records_everything(tmp_path):
    final, deps = run_tiny(tmp_path, classic_roles(), generations=3)
    history = final["best_history"]
    assert len(history) == 4
    # every generation draws a fresh sample: the best's score is the last stage's on that draw
    assert final["best"]["fitness"] == history[-1] and final["best"]["stage"] == 1
    candidates = deps.store.candidates()
    assert_on_budget(deps, candidates)
    keys = {c["plan_key"] for c in candidates}
    assert deps.fitness.known_keys() == keys
    # one draw per (generation, stage); the first stage scores the children only: the population (the
    # last generation's survivors) skips it and is scored again at the last stage, beside the children
    # that passed (elitism)
    rows = list(deps.store.db["evaluations"].rows)
    assert len({r["kind"] for r in rows if ":2x16:" in r["kind"]}) == 4
    generations = deps.store.generations()
    seed = deps.seeds[0][1].key()  # the seeds stand as generation 0's population: no cheap screen either
    assert seed not in {r["plan_key"] for r in rows if r["kind"] == "kl:2x16:g0s0:seed0"}
    assert seed in {r["plan_key"] for r in rows if r["kind"] == "kl:2x32:g0s1:seed0"}
    for g in range(1, 4):
        survivors = set(json.loads(generations[g - 1]["population"]))
        first = {r["plan_key"] for r in rows if r["kind"] == f"kl:2x16:g{g}s0:seed0"}
        last = {r["plan_key"] for r in rows if r["kind"] == f"kl:2x32:g{g}s1:seed0"}
        assert first and not first & survivors and survivors <= last and last - survivors
    assert len(deps.store.generations()) == 4
    assert {c["origin"].split(":")[0] for c in candidates} == {"classic", "seed"}
    moved = [c for c in candidates if c["origin"] == "classic:exact-move"]
    assert moved and all(c["total_params"] <= deps.budget.target_params for c in moved)


def test_llm_search_uses_good_answers_and_falls_back_on_garbage(tmp_path):
    # generation 1: the mutator gets garbage twice (one retry) -> classic fallback
    answers = [GOOD_INIT, PAIRS, CHILDREN, "garbage", "{not json", PAIRS, CHILDREN, MUTANTS]
    final, deps = run_tiny(tmp_path, llm_roles(answers), generations=2)
    calls = deps.store.calls()
    by_role = deps.store.outcome_counts()
    assert by_role["initializer"] == {"used": 1}, by_role
    assert by_role["mutator"]["fallback"] == 1 and by_role["mutator"]["invalid"] == 2
    fallback_gen = [c["generation"] for c in calls if c["outcome"] == "fallback"]
    assert fallback_gen == [1]
    failed = [c for c in calls if c["outcome"] == "invalid"]
    assert all(c["error"] == "the answer is not valid JSON" for c in failed)
    assert "Your previous answer was rejected" in failed[1]["prompt"]  # the retry showed the error
    origins = {c["origin"] for c in deps.store.candidates()}
    assert "llm:initializer" in origins and "llm:crosser" in origins and "llm:mutator" in origins
    assert any(o.startswith("classic:") for o in origins)  # the fallback's mutants
    assert_on_budget(deps, deps.store.candidates())


def test_retry_then_success_is_recorded_as_retried(tmp_path):
    wrong_length = json.dumps({"genomes": [[30, 30]] * 4})
    answers = [wrong_length, GOOD_INIT, PAIRS, CHILDREN, MUTANTS]
    _, deps = run_tiny(tmp_path, llm_roles(answers), generations=1)
    init_calls = deps.store.calls("initializer")
    assert [c["outcome"] for c in init_calls] == ["invalid", "retried"]
    assert "has 2 numbers, expected 4" in init_calls[0]["error"]


def test_out_of_bounds_answer_is_repaired_not_rejected(tmp_path):
    wild = json.dumps({"genomes": [[95, 0, 0, 95], [300, -20, 10, 10], [1, 2, 3, 4], [30, 30, 30, 30]]})
    _, deps = run_tiny(tmp_path, llm_roles([wild, PAIRS, CHILDREN, MUTANTS]), generations=1)
    assert deps.store.calls("initializer")[0]["outcome"] == "repaired"
    assert_on_budget(deps, deps.store.candidates())


def test_llm_initializer_with_classic_rest(tmp_path):
    _, deps = run_tiny(tmp_path, llm_roles([GOOD_INIT], llm_roles=("initializer",)), generations=1)
    assert set(deps.store.outcome_counts()) == {"initializer"}
    origins = {c["origin"] for c in deps.store.candidates() if c["generation"] == 1}
    assert origins and all(o.startswith("classic:") for o in origins)


def test_module_granularity_search_with_llm_answers(tmp_path):
    # 4 layers -> 8 numbers: attention rates, then MLP rates
    init = json.dumps({"genomes": [[0, 0, 0, 0, 40, 40, 40, 40], [25, 0, 25, 0, 30, 45, 30, 45],
                                   [0, 25, 0, 25, 45, 30, 45, 30], [10, 10, 10, 10, 35, 35, 35, 35]]})
    children = json.dumps({"genomes": [[0, 0, 25, 0, 40, 45, 30, 40], [0, 25, 0, 0, 35, 30, 45, 40]]})
    final, deps = run_tiny(tmp_path, llm_roles([init, PAIRS, children, children]), granularity="module", generations=2)
    candidates = deps.store.candidates()
    assert all(len(json.loads(c["genome"])) == 8 and c["granularity"] == "module" for c in candidates)
    assert_on_budget(deps, candidates)
    assert deps.store.calls("initializer")[-1]["outcome"] in ("used", "repaired")
    assert len(final["best"]["rates"]) == 8


def test_the_champion_is_the_best_of_seeds_and_generation_bests_on_the_judges_windows(tmp_path):
    """Every score in the loop is on a small fresh sample; finalize scores the seeds, each generation's
    best and the last population once more on fixed windows and returns the best of them there."""
    from graphs.runner import run_search
    from evaluation.fitness import FitnessEvaluator
    from pruning.data import TokenWindows
    from pruning.genome import PruningPlan
    from tests.search_fixtures import tiny_search_deps
    from tests.tiny import tiny_inputs

    deps = tiny_search_deps(tmp_path, classic_roles(), generations=3)
    judge = FitnessEvaluator(deps.fitness.context, TokenWindows(tiny_inputs(3, 32, seed=11), "t", "judge"),
                             kind="kl", store=deps.store)
    deps.judge = judge
    final = run_search(deps, "test", tmp_path / "checkpoint.db")
    best, record = final["best"], deps.store.champion()
    assert record["plan_key"] == best["plan_key"] and record["pool"] >= 2
    assert best["fitness"] == judge.evaluate(PruningPlan.from_list(best["plan"])).value  # stated on the judge
    seeds = [judge.evaluate(plan).value for _, plan in deps.seeds]
    assert best["fitness"] <= min(seeds)  # never worse there than a seed
    population = json.loads(deps.store.generations()[-1]["population"])
    margin = deps.settings.champion_margin
    for key in population:  # nor than any of the last survivors, unless a seed within the margin was kept
        plan = PruningPlan.from_list(json.loads(deps.store.candidate(key)["plan"]))
        if record["seed_kept_by_margin"]:
            assert best["origin"].startswith("seed:") and judge.evaluate(plan).value > best["fitness"] * (1 - margin)
        else:
            assert best["fitness"] <= judge.evaluate(plan).value


def test_a_searched_plan_must_beat_the_best_seed_by_the_margin_to_be_the_champion(tmp_path):
    """Below the judge's resolution the best seed stays: with a margin larger than any gain the
    champion is the best seed; with no margin it is the best plan on the judge's windows."""
    from graphs.runner import run_search
    from evaluation.fitness import FitnessEvaluator
    from pruning.data import TokenWindows
    from tests.search_fixtures import tiny_search_deps
    from tests.tiny import tiny_inputs

    picks = {}
    for margin in (0.0, 0.99):
        deps = tiny_search_deps(tmp_path / str(margin), classic_roles(), generations=2)
        deps.settings.champion_margin = margin
        deps.judge = FitnessEvaluator(deps.fitness.context, TokenWindows(tiny_inputs(3, 32, seed=11), "t", "judge"),
                                      kind="kl", store=deps.store)
        final = run_search(deps, "test", tmp_path / str(margin) / "checkpoint.db")
        seeds = {plan.key(): deps.judge.evaluate(plan).value for _, plan in deps.seeds}
        picks[margin] = (final["best"], deps.store.champion(), min(seeds.values()))
    best, record, best_seed = picks[0.99]
    assert best["origin"].startswith("seed:") and best["fitness"] == best_seed
    best, record, best_seed = picks[0.0]
    assert not record["seed_kept_by_margin"] and best["fitness"] <= best_seed
    assert not best["origin"].startswith("seed:")  # the tiny search does find a plan better than its seeds


def test_search_minutes_stops_after_the_generation_that_passes_the_limit(tmp_path):
    """--search-minutes: the generation that ends past the limit is the last; its population is kept
    and finalize runs as after the last generation."""
    from graphs.runner import run_search
    from tests.search_fixtures import tiny_search_deps

    deps = tiny_search_deps(tmp_path, classic_roles(), generations=5)
    deps.settings.time_limit_s = 1e-6  # passed by the end of the initial generation
    final = run_search(deps, "test", tmp_path / "checkpoint.db")
    assert [g["generation"] for g in deps.store.generations()] == [0]
    assert final["best"] is not None


def test_llm_plus_tools_is_an_ablation_arm():
    from experiments.ablation import parse_arm

    arm = parse_arm("llm+tools")
    assert arm.uses_llm and arm.tools and not parse_arm("llm").tools
