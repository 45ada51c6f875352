"""Repair always lands on the budget (within one MLP unit, never above) and inside the bounds."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning.budget import budget_from_args
from pruning.genome import Genome
from pruning.repair import repair
from pruning.shape import LayerShape, ModelShape
from pruning.space import PruningSpace

LAYERS = 6


def space_for(gqa: str, compensate: bool = False, min_rate=0.0, max_rate=0.9) -> PruningSpace:
    layer = LayerShape(num_attention_heads=8, num_key_value_heads=2, intermediate_size=512)
    shape = ModelShape(hidden_size=128, head_dim=16, vocab_size=1000, tie_word_embeddings=False, layers=(layer,) * LAYERS)
    return PruningSpace(shape, gqa=gqa, mlp_unit=16, min_rate=min_rate, max_rate=max_rate, adds_bias=compensate)


wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2, max_value=3),
    st.floats(min_value=0, max_value=1),
)


@settings(max_examples=150, deadline=None)
@given(
    gqa=st.sampled_from(["query", "group"]),
    granularity=st.sampled_from(["layer", "module"]),
    compensate=st.booleans(),
    rate=st.floats(min_value=0.0, max_value=0.75),
    data=st.data(),
)
def test_repair_meets_budget_and_bounds(gqa, granularity, compensate, rate, data):
    space = space_for(gqa, compensate, min_rate=0.02, max_rate=0.85)
    budget = budget_from_args(space.shape, None, rate, space.min_total_params(granularity))
    n = LAYERS if granularity == "layer" else 2 * LAYERS
    raw = data.draw(st.lists(wild, min_size=n, max_size=n))
    result = repair(Genome(granularity, tuple(raw)), space, budget)
    total = space.total_params(result.plan)
    assert total == result.total_params
    assert total <= budget.target_params
    largest_unit = max(space.mlp_unit_params(i) for i in range(LAYERS))
    assert budget.target_params - total < largest_unit
    assert result.genome.is_finite()
    for i, layer_plan in enumerate(result.plan.layers):  # every module keeps at least one unit
        assert layer_plan.attn_units_removed < space.attn_units(i)
        assert layer_plan.mlp_units_removed < space.mlp_units(i)
    if any(not math.isfinite(r) for r in raw):
        assert any("non-finite" in note for note in result.notes)


def test_repair_of_a_feasible_uniform_genome_changes_little():
    space = space_for("query")
    budget = budget_from_args(space.shape, None, 0.3, 0)
    result = repair(Genome.uniform("layer", LAYERS, 0.3), space, budget)
    assert all(abs(r - 0.3) < 0.05 for r in result.genome.rates)
    assert not any("clipped" in n or "non-finite" in n for n in result.notes)


def test_repair_reports_clipping_and_shift():
    space = space_for("query", max_rate=0.6)
    budget = budget_from_args(space.shape, None, 0.2, 0)
    result = repair(Genome("layer", (5.0, -1.0, 0.2, 0.2, 0.2, 0.2)), space, budget)
    assert any("clipped" in note for note in result.notes)
    assert any("shifted" in note for note in result.notes)
    assert max(result.genome.rates) <= 0.6 + 0.05  # realised rates stay near the bound


def test_repair_is_deterministic():
    space = space_for("group")
    budget = budget_from_args(space.shape, None, 0.4, 0)
    genome = Genome("module", tuple(0.1 * i for i in range(2 * LAYERS)))
    assert repair(genome, space, budget).plan == repair(genome, space, budget).plan


def test_snapping_is_in_units():
    space = space_for("query")
    plan = space.snap(Genome("module", (0.5,) * LAYERS + (0.25,) * LAYERS))
    assert all(p.attn_units_removed == 2 and p.mlp_units_removed == 8 for p in plan.layers)
    shape = space.pruned_shape(plan)
    assert shape.layers[0].num_attention_heads == 4 and shape.layers[0].num_key_value_heads == 2
    assert shape.layers[0].intermediate_size == 512 - 8 * 16


def test_wrong_genome_length_is_rejected():
    with pytest.raises(ValueError, match="layers"):
        space_for("query").snap(Genome("layer", (0.1, 0.2)))
