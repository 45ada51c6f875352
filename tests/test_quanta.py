"""Exact moves: parameter quanta between layers keep a plan on its budget by construction."""
import random

import pytest

from pruning.adapter import DecoderAdapter
from pruning.budget import budget_from_args
from pruning.genome import LayerPlan, PruningPlan
from pruning.quanta import MoveSpace, PlanMove, apply
from pruning.space import PruningSpace
from tests.tiny import tiny_llama


def space_and_budget(rate=0.3, adds_bias=False):
    space = PruningSpace(DecoderAdapter(tiny_llama()).shape(), mlp_unit=16, adds_bias=adds_bias)
    return space, budget_from_args(space.shape, None, rate, space.min_total_params("layer"))


@pytest.mark.parametrize("adds_bias", [False, True])
def test_random_moves_never_cross_the_budget_and_keep_the_count(adds_bias):
    space, budget = space_and_budget(adds_bias=adds_bias)
    moves = MoveSpace(space, budget)
    rng = random.Random(0)
    plan = moves.rebalance(PruningPlan.keep_all(space.num_layers), rng)
    start = space.total_params(plan)
    assert budget.target_params - space.mlp_unit_params(0) < start <= budget.target_params
    kinds = set()
    for _ in range(200):
        plan, done = moves.mutate(plan, rng, 2)
        kinds |= {(m.more_kind, m.less_kind) for m in done}
        assert space.total_params(plan) <= budget.target_params
        if not adds_bias:  # without a compensation bias every move is exactly parameter-neutral
            assert space.total_params(plan) == start
        for i, layer in enumerate(plan.layers):
            assert 0 <= layer.attn_units_removed < space.attn_units(i)
            assert 0 <= layer.mlp_units_removed < space.mlp_units(i)
    assert ("mlp", "mlp") in kinds
    if not adds_bias:  # both kinds of level switch happen
        assert ("attn", "attn") in kinds
    # with a compensation bias, a module's first removed unit adds a bias: from a plan that removes no
    # attention and sits tight on the budget, no attention move fits (the search's known limit)


def test_attention_against_mlp_moves_at_their_exchange_rate():
    space, budget = space_and_budget()
    moves = MoveSpace(space, budget)
    a, m = space.attn_unit_params(0), space.mlp_unit_params(0)
    more, back = moves.exchange((0, "attn"), (1, "mlp"))
    assert more * a == back * m
    plan = moves.rebalance(PruningPlan.keep_all(space.num_layers), random.Random(1))
    move = PlanMove(0, "attn", more, 1, "mlp", back)
    if moves.legal(plan, move):
        assert space.total_params(apply(plan, move)) == space.total_params(plan)


def test_rebalance_puts_any_plan_on_the_budget_in_whole_units():
    space, budget = space_and_budget(rate=0.4)
    moves = MoveSpace(space, budget)
    unit = max(space.mlp_unit_params(i) for i in range(space.num_layers))
    too_big = PruningPlan(tuple(LayerPlan(0, 1) for _ in range(space.num_layers)))
    too_small = PruningPlan(tuple(LayerPlan(space.attn_units(i) - 1, space.mlp_units(i) - 1)
                                  for i in range(space.num_layers)))
    for plan in (too_big, too_small):
        fixed = moves.rebalance(plan, random.Random(0))
        assert budget.target_params - unit < space.total_params(fixed) <= budget.target_params


def test_a_move_that_would_empty_a_module_is_not_legal():
    space, budget = space_and_budget()
    moves = MoveSpace(space, budget)
    plan = moves.rebalance(PruningPlan.keep_all(space.num_layers), random.Random(0))
    full = space.mlp_units(0) - 1 - plan.layers[0].mlp_units_removed
    assert not moves.legal(plan, PlanMove(0, "mlp", full + 1, 1, "mlp", full + 1))
    assert not moves.legal(plan, PlanMove(0, "mlp", 1, 0, "mlp", 1))  # a module with itself
    describe = PlanMove(2, "attn", 1, 3, "mlp", 4).describe()
    assert describe == "prune 1 attention unit more in layer 2, 4 MLP units less in layer 3"


@pytest.mark.parametrize("adds_bias", [False, True])
def test_a_layer_shift_moves_many_units_and_the_others_make_up_for_it(adds_bias):
    space, budget = space_and_budget(rate=0.4, adds_bias=adds_bias)
    moves = MoveSpace(space, budget)
    rng = random.Random(0)
    plan = moves.rebalance(PruningPlan.keep_all(space.num_layers), rng)
    seen = 0
    for _ in range(100):
        shift = moves.random_shift(plan, rng)
        if shift is None:
            continue
        seen += 1
        child = moves.apply(plan, shift)
        assert child.key() == moves.apply(plan, shift).key()  # the same shift lands on the same plan
        before = plan.layers[shift.layer]
        after = child.layers[shift.layer]
        changed = (after.attn_units_removed - before.attn_units_removed if shift.kind == "attn"
                   else after.mlp_units_removed - before.mlp_units_removed)
        assert changed == shift.units  # the shifted layer is held while the others rebalance
        total = space.total_params(child)
        assert total <= budget.target_params
        assert budget.target_params - total < 2 * max(space.mlp_unit_params(i) for i in range(space.num_layers)) + \
            (2 * space.shape.hidden_size if adds_bias else 0)  # tight: nothing is left unspent beyond a unit or so
        for i, layer in enumerate(child.layers):
            assert 0 <= layer.attn_units_removed < space.attn_units(i)
            assert 0 <= layer.mlp_units_removed < space.mlp_units(i)
        if shift.units < 0:  # the others prune more in all
            others = sum(l.mlp_units_removed for j, l in enumerate(child.layers) if j != shift.layer)
            assert others >= sum(l.mlp_units_removed for j, l in enumerate(plan.layers) if j != shift.layer)
        plan = child
    assert seen > 50
