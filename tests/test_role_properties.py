"""Whatever the model answers, a role ends with on-budget genomes or a recorded fallback."""
import json
import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import classic
from agents.proposals import to_candidates
from agents.types import Candidate, RoleContext
from pruning.budget import budget_from_args
from pruning.shape import LayerShape, ModelShape
from pruning.space import PruningSpace
from tests.search_fixtures import llm_roles

LAYERS = 5
SPACE = PruningSpace(
    ModelShape(hidden_size=64, head_dim=8, vocab_size=100, tie_word_embeddings=True,
               layers=(LayerShape(8, 2, 256),) * LAYERS), mlp_unit=16)
BUDGET = budget_from_args(SPACE.shape, None, 0.3, SPACE.min_total_params())


def context(count: int, population=None) -> RoleContext:
    return RoleContext(space=SPACE, budget=BUDGET, granularity="layer", population=population or [], count=count,
                       generation=1, rng=random.Random(0), known_keys=set(), model_name="tiny",
                       layer_importance=[(1.0, 1.0)] * LAYERS)


def population() -> list[Candidate]:
    ctx = context(4)
    init = classic.initialize(ctx)
    cands = to_candidates(ctx, init.genomes, init.origins, init.parents)
    for k, cand in enumerate(cands):
        cand.fitness = 10.0 + k
    return cands


numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.none(), st.text(max_size=3))
json_values = st.recursive(numbers, lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=40)


def as_answer(value) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return str(value)


answers = st.one_of(
    st.text(max_size=200),
    json_values.map(as_answer),
    st.lists(st.lists(numbers, min_size=0, max_size=7), max_size=6).map(lambda g: as_answer({"genomes": g})),
    st.lists(st.lists(st.integers(-5, 12), max_size=3), max_size=6).map(lambda p: as_answer({"pairs": p})),
)


def check_genomes(result, ctx):
    finals = [c for c in result.calls if c.outcome in ("used", "repaired", "retried", "fallback")]
    assert len(finals) == 1, [c.outcome for c in result.calls]
    assert len(result.genomes) == ctx.count
    # the recorded outcome says truthfully whose genomes these are (the ablation counts on it)
    from_llm = [o.startswith("llm:") for o in result.origins]
    if finals[0].outcome == "fallback":
        assert not any(from_llm), result.origins
    else:
        assert any(from_llm), (finals[0].outcome, result.origins)
    if finals[0].outcome == "used":
        assert all(from_llm) and not finals[0].notes
    for cand in to_candidates(ctx, result.genomes, result.origins, result.parents):
        assert cand.total_params <= BUDGET.target_params
        assert all(math.isfinite(r) and SPACE.min_rate - 1e-9 <= r <= 1 for r in cand.rates)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=answers, second=answers)
def test_initializer_and_mutator_never_escape(first, second):
    roles = llm_roles([first, second], retries=1)
    ctx = context(3)
    check_genomes(roles["initializer"](ctx), ctx)
    pop = population()
    ctx = context(2, pop)
    ctx.genomes, ctx.parent_keys = [pop[0].genome, pop[1].genome], [pop[0].plan_key, pop[1].plan_key]
    check_genomes(roles["mutator"](ctx), ctx)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=answers, second=answers)
def test_selector_and_crosser_never_escape(first, second):
    roles = llm_roles([first, second], retries=1)
    pop = population()
    ctx = context(3, pop)
    result = roles["selector"](ctx)
    assert len(result.pairs) == 3 and all(0 <= i < len(pop) and 0 <= j < len(pop) for i, j in result.pairs)
    assert sum(c.outcome in ("used", "repaired", "retried", "fallback") for c in result.calls) == 1
    ctx.pairs = result.pairs
    check_genomes(roles["crosser"](ctx), ctx)


def test_grammars_bound_the_answer():
    from agents.schemas import genomes_grammar, pairs_grammar

    assert "idx ::= [0-7]" in pairs_grammar(4, 8)
    assert "[1-9] [0-9]" in pairs_grammar(4, 20)
    grammar = genomes_grammar(2, 3)
    assert grammar.count('"," num') == 2 and grammar.count('"," genome') == 1
    assert 'num ::= [0-9] | [1-9] [0-9]' in grammar  # at most two digits: no runaway numbers


def test_shipped_prompt_sets_load_and_render():
    from agents.prompting import PromptSet, common_fields

    for name in ("default", "no-importance", "no-history", "diverse", "moves"):
        prompts = PromptSet.load(name)
        assert prompts.name == name and prompts.answer == ("moves" if name == "moves" else "genomes")
        fields = {**common_fields(context(2)), "importance": "layer 0: attention 1.00, mlp 1.00",
                  "answer_format": "JSON", "population": "0: 1.0 | [20]", "population_unsorted": "0: 1.0 | [20]",
                  "parents": "pair 0", "genomes": "0: [20]", "moves": "0: prune layer 1 +5%", "options": "0: halves"}
        for role in ("initializer", "selector", "crosser", "mutator"):
            text = prompts.render(role, fields)
            assert "tiny" in text and "{model_name}" not in text
    assert "calibration pass" not in PromptSet.load("no-importance").templates["initializer"]
