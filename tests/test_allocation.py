import json

import pytest

from pruning import allocation
from pruning.adapter import DecoderAdapter
from pruning.budget import budget_from_args
from pruning.data import TokenWindows
from pruning.importance import collect_activation_stats, compute_importance, wanda_outlier_ratios
from pruning.repair import repair
from pruning.space import PruningSpace
from tests.tiny import tiny_inputs, tiny_llama


@pytest.fixture(scope="module")
def setup():
    model = tiny_llama(layers=6)
    space = PruningSpace(DecoderAdapter(model).shape(), mlp_unit=16)
    stats = collect_activation_stats(model, TokenWindows(tiny_inputs(4, 32), "t", "v"))
    budget = budget_from_args(space.shape, None, 0.3, 0)
    return model, space, stats, budget


def test_owl_keeps_the_mean_and_favours_outlier_layers(setup):
    model, space, stats, budget = setup
    ratios = wanda_outlier_ratios(model, stats, threshold=2.0)
    genome = allocation.owl(space, budget, ratios, lam=0.08)
    assert sum(genome.rates) / len(genome.rates) == pytest.approx(budget.average_rate)
    assert max(genome.rates) - min(genome.rates) == pytest.approx(0.16)
    most, least = ratios.index(max(ratios)), ratios.index(min(ratios))
    assert genome.rates[most] < genome.rates[least]


def test_flap_structure_meets_the_budget(setup):
    model, space, stats, budget = setup
    genome = allocation.flap(space, budget, compute_importance(model, stats, "flap"))
    assert genome.granularity == "module"
    plan = space.snap(genome)
    removed = space.shape.total_params() - space.total_params(plan)
    assert removed >= budget.removed_params
    result = repair(genome, space, budget)
    assert budget.target_params - result.total_params < max(space.mlp_unit_params(0), space.attn_unit_params(0))


def test_genome_from_list_and_file(setup, tmp_path):
    _, space, _, _ = setup
    assert allocation.genome_from_spec("0.1,0.2,0.3,0.1,0.2,0.3", space, "layer").rates[2] == 0.3
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"granularity": "module", "rates": [0.1] * 12}))
    assert allocation.genome_from_spec(str(path), space, "layer").granularity == "module"
    with pytest.raises(ValueError, match="needs 6"):
        allocation.genome_from_spec("0.1,0.2", space, "layer")
    with pytest.raises(ValueError, match="not one of"):
        allocation.genome_from_spec("bogus", space, "layer")
    with pytest.raises(ValueError, match="needs 6"):  # a 300-character list is parsed, not stat()ed as a path
        allocation.genome_from_spec(",".join(["0.20305901234567890123"] * 14), space, "layer")


def test_llm_pruner_range_leaves_the_first_and_last_layers_whole(setup):
    _, space, _, budget = setup
    assert allocation.protected_layers(32) == [0, 1, 2, 3, 31]  # LLM-Pruner prunes layers 4-30 of LLaMA-7B
    assert allocation.protected_layers(6) == [0, 5]
    result = repair(allocation.llm_pruner(space, budget), space, budget)
    assert result.total_params <= budget.target_params
    for i, layer in enumerate(result.plan.layers):
        removed = layer.attn_units_removed + layer.mlp_units_removed
        assert (removed == 0) == (i in (0, 5))  # only the protected layers keep everything
