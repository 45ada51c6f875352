"""--latency-weight: module timings make a latency table, the search ranks by fitness weighed by a
plan's predicted latency, and the roles see it."""
import json

import torch

from agents.roles import classic_roles
from evaluation.latency_table import LatencyObjective, LatencyTable, measure
from graphs.runner import run_search
from pruning.adapter import DecoderAdapter
from pruning.genome import LayerPlan, PruningPlan
from pruning.space import PruningSpace
from tests.search_fixtures import llm_roles, tiny_search_deps
from tests.tiny import tiny_llama


def tiny_space() -> PruningSpace:
    return PruningSpace(DecoderAdapter(tiny_llama()).shape(), mlp_unit=16)


def test_the_table_times_every_width_and_predicts_less_for_a_smaller_plan(tmp_path):
    space = tiny_space()
    table = measure(space, torch.device("cpu"), torch.float32, seqlen=32, repeats=3)
    assert len(table.attention) == space.attn_units(0)  # every attention width a layer can keep
    assert max(table.mlp) == space.shape.layers[0].intermediate_size and min(table.mlp) == space.mlp_unit
    widths = sorted(table.mlp)
    assert all(table.mlp[a] <= table.mlp[b] for a, b in zip(widths, widths[1:]))  # never faster when wider
    dense = PruningPlan.keep_all(space.num_layers)
    assert table.ratio(space, dense) == 1.0
    smaller = PruningPlan(tuple(LayerPlan(space.attn_units(i) // 2, space.mlp_units(i) // 2)
                                for i in range(space.num_layers)))
    assert 0 < table.ratio(space, smaller) < 1
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.ratio(space, smaller) == table.ratio(space, smaller)


def test_a_run_keeps_its_table_and_remeasures_for_another_device_or_shape(tmp_path, monkeypatch):
    import evaluation.latency_table as lt

    space, path = tiny_space(), tmp_path / "latency_table.json"
    first = LatencyTable.load_or_measure(path, space, torch.device("cpu"), torch.float32, seqlen=32, repeats=3)
    assert path.exists()
    monkeypatch.setattr(lt, "measure", lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured again")))
    kept = LatencyTable.load_or_measure(path, space, torch.device("cpu"), torch.float32, seqlen=32)
    assert kept.to_dict() == first.to_dict()  # a resumed run ranks with the same table
    monkeypatch.setattr(lt, "measure", lambda space, device, dtype, seqlen, repeats: first)
    other = LatencyTable.load_or_measure(path, space, torch.device("cpu"), torch.float32, seqlen=64)
    assert other is first  # another window length: measured anew (here: the stand-in)


def attention_heavy(space) -> LatencyTable:
    """A table where attention costs 10x the MLP: plans that prune attention are faster."""
    attention = {}
    for units in range(1, space.attn_units(0) + 1):
        kept = space.layer_shape_after(0, LayerPlan(space.attn_units(0) - units, 0))
        attention[(kept.num_attention_heads, kept.num_key_value_heads)] = 10.0 * units / space.attn_units(0)
    mlp = {u * space.mlp_unit: u / space.mlp_units(0) for u in range(1, space.mlp_units(0) + 1)}
    return LatencyTable(attention, mlp, 0.1, {"device": "test"})


def test_the_objective_is_the_fitness_for_a_plan_as_fast_as_uniform_and_lower_for_a_faster_one(tmp_path):
    deps = tiny_search_deps(tmp_path, classic_roles())
    space, uniform = deps.space, deps.fitness.context.uniform_plan(deps.budget)
    objective = LatencyObjective(attention_heavy(space), space, uniform, weight=1.0)
    assert objective.score(uniform, 0.5) == (0.5, objective.reference)
    less_attention = PruningPlan(tuple(LayerPlan(min(p.attn_units_removed + 1, space.attn_units(i) - 1),
                                                 p.mlp_units_removed) for i, p in enumerate(uniform.layers)))
    value, latency = objective.score(less_attention, 0.5)
    assert latency < objective.reference and value < 0.5


def test_the_search_ranks_by_the_objective_and_the_roles_see_latency(tmp_path):
    """Same search, same seed: with an attention-heavy table and a strong weight, the champion is
    predicted faster than without the weight; the prompts show each member's latency."""
    champions = {}
    for weight in (0.0, 4.0):
        answers = ['{"pairs":[[0,1],[1,2],[2,3],[0,2]]}'] * 40
        deps = tiny_search_deps(tmp_path / f"w{weight}", llm_roles(answers, llm_roles="selector"), generations=3)
        uniform = deps.fitness.context.uniform_plan(deps.budget)
        table = attention_heavy(deps.space)
        deps.objective = LatencyObjective(table, deps.space, uniform, weight) if weight else None
        final = run_search(deps, "test", tmp_path / f"w{weight}" / "checkpoint.db")
        champions[weight] = table.ratio(deps.space, PruningPlan.from_list(final["best"]["plan"]))
        if weight:
            assert final["best"]["latency"] is not None
            prompts = [c["prompt"] for c in deps.store.calls("selector") if c["prompt"]]
            assert prompts and all("of dense" in p for p in prompts)
    assert champions[4.0] < champions[0.0]


def test_numbers_the_search_cannot_run_with_are_named_before_loading():
    import pytest

    from assembly.config import RunConfig

    for field, value, flag in (("latency_weight", -1.0, "--latency-weight"), ("population", 0, "--population"),
                               ("crossover_share", 1.5, "--crossover-share")):
        with pytest.raises(ValueError, match=flag):
            RunConfig(**{field: value}).check_values()
    RunConfig().check_values()  # the defaults run
