"""Exact moves: parameter quanta moved between layers, so a plan stays on its budget by construction.

A plan removes whole units (pruning/space.py): attention units (one query head per KV group) and
MLP units (`mlp_unit` channels). A *move* prunes `units_more` more units of one module and gives
back `units_less` units of another at the same parameter count: MLP units between two layers,
attention units between two layers, or one attention unit against the MLP units it is worth
(SmolLM2-135M: 1 attention unit = 4 MLP units exactly). EvoPress's level switch, on our units.

A *shift* is the large step beside it: one layer's module prunes many units more or less (a quarter
to all of what it prunes, or of its room), and every other layer makes up the difference evenly
(rebalance with that layer held). Pairwise moves of 1-3 units walk slowly away from the seeds: in
8 generations they never found what the best plans at rate 0.5 look like (the first layers nearly
whole, the rest evenly pruned), which one shift reaches.

The only thing a move can change in the count is the compensation bias a module gains when it
loses its first unit (a few thousand parameters); a move that would then cross the budget is not
offered. `rebalance` puts any plan (a crossover's child, an LLM's answer, a seed) onto the budget
in the same quanta: units are added where the plan prunes least, given back where it prunes most.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from pruning.budget import Budget
from pruning.genome import LayerPlan, PruningPlan
from pruning.space import PruningSpace

KINDS = ("attn", "mlp")


@dataclass(frozen=True)
class PlanMove:
    more: int  # layer that prunes more
    more_kind: str  # attn | mlp
    more_units: int
    less: int  # layer that prunes less
    less_kind: str
    less_units: int

    def describe(self) -> str:
        def part(kind, units):
            return f"{units} {'attention' if kind == 'attn' else 'MLP'} unit{'s' * (units > 1)}"
        return (f"prune {part(self.more_kind, self.more_units)} more in layer {self.more}, "
                f"{part(self.less_kind, self.less_units)} less in layer {self.less}")


@dataclass(frozen=True)
class LayerShift:
    layer: int
    kind: str  # attn | mlp
    units: int  # > 0: prunes more; < 0: prunes less. The other layers make up the difference evenly.

    def describe(self) -> str:
        what = f"{abs(self.units)} {'attention' if self.kind == 'attn' else 'MLP'} unit{'s' * (abs(self.units) > 1)}"
        return (f"prune {what} {'more' if self.units > 0 else 'less'} in layer {self.layer}, "
                f"every other layer a little {'less' if self.units > 0 else 'more'}")


def _units(plan: PruningPlan) -> list[list[int]]:
    return [[p.attn_units_removed, p.mlp_units_removed] for p in plan.layers]


def _plan(units: list[list[int]]) -> PruningPlan:
    return PruningPlan(tuple(LayerPlan(a, m) for a, m in units))


def _capacity(space: PruningSpace, i: int, kind: str) -> int:
    """Most units a module may lose: every module keeps one, and the rate bound holds per module."""
    total = space.attn_units(i) if kind == "attn" else space.mlp_units(i)
    return min(total - 1, int(space.max_rate * total + 1e-9)) if space.max_rate < 1 else total - 1


def _index(kind: str) -> int:
    return 0 if kind == "attn" else 1


def apply(plan: PruningPlan, move: PlanMove) -> PruningPlan:
    """A pairwise move (a shift needs the budget: MoveSpace.apply)."""
    units = _units(plan)
    units[move.more][_index(move.more_kind)] += move.more_units
    units[move.less][_index(move.less_kind)] -= move.less_units
    return _plan(units)


class MoveSpace:
    """The legal moves of a space under a budget (prices are read once)."""

    def __init__(self, space: PruningSpace, budget: Budget, max_units: int = 3):
        self.space, self.budget, self.max_units = space, budget, max_units
        n = space.num_layers
        self.price = {(i, k): (space.attn_unit_params(i) if k == "attn" else space.mlp_unit_params(i))
                      for i in range(n) for k in KINDS}
        self.capacity = {(i, k): _capacity(space, i, k) for i in range(n) for k in KINDS}

    def exchange(self, more: tuple[int, str], less: tuple[int, str]) -> tuple[int, int] | None:
        """(units pruned more, units given back) at equal parameters, smallest first; None if the
        two prices have no small common multiple."""
        p_more, p_less = self.price[more], self.price[less]
        for a in range(1, 9):
            if (a * p_more) % p_less == 0 and a * p_more // p_less <= 32:
                return a, a * p_more // p_less
        return None

    def apply(self, plan: PruningPlan, move: PlanMove | LayerShift) -> PruningPlan:
        if isinstance(move, PlanMove):
            return apply(plan, move)
        units = _units(plan)
        units[move.layer][_index(move.kind)] += move.units
        # the same shift of the same plan always lands on the same plan (ties broken by a fixed draw)
        return self.rebalance(_plan(units), random.Random(f"{plan.key()}:{move}"), held=move.layer)

    def legal(self, plan: PruningPlan, move: PlanMove | LayerShift) -> bool:
        if isinstance(move, LayerShift):
            now = _units(plan)[move.layer][_index(move.kind)] + move.units
            if move.units == 0 or not 0 <= now <= self.capacity[(move.layer, move.kind)]:
                return False
            try:
                return self.space.total_params(self.apply(plan, move)) <= self.budget.target_params
            except ValueError:  # the other layers cannot make up for it within their bounds
                return False
        units = _units(plan)
        m = units[move.more][_index(move.more_kind)] + move.more_units
        l = units[move.less][_index(move.less_kind)] - move.less_units
        if m > self.capacity[(move.more, move.more_kind)] or l < 0:
            return False
        if (move.more, move.more_kind) == (move.less, move.less_kind):
            return False
        return self.space.total_params(apply(plan, move)) <= self.budget.target_params

    def random_move(self, plan: PruningPlan, rng: random.Random, tries: int = 50) -> PlanMove | None:
        """Most moves stay within a module kind (MLP more often: its units are the finer grid)."""
        n = self.space.num_layers
        for _ in range(tries):
            roll = rng.random()
            more_kind, less_kind = ("mlp", "mlp") if roll < 0.6 else ("attn", "attn") if roll < 0.8 else \
                rng.choice((("attn", "mlp"), ("mlp", "attn")))
            i, j = rng.randrange(n), rng.randrange(n)
            if (i, more_kind) == (j, less_kind):
                continue
            base = self.exchange((i, more_kind), (j, less_kind))
            if base is None:
                continue
            scale = rng.randint(1, self.max_units) if more_kind == less_kind else 1
            move = PlanMove(i, more_kind, base[0] * scale, j, less_kind, base[1] * scale)
            if self.legal(plan, move):
                return move
        return None

    def random_shift(self, plan: PruningPlan, rng: random.Random, tries: int = 20) -> LayerShift | None:
        """One layer's MLP (3 in 4) or attention prunes a quarter to all of its units less, or a
        tenth to a half of its room more."""
        units = _units(plan)
        for _ in range(tries):
            i, kind = rng.randrange(self.space.num_layers), "mlp" if rng.random() < 0.75 else "attn"
            now, cap = units[i][_index(kind)], self.capacity[(i, kind)]
            if now > 0 and (rng.random() < 0.5 or now == cap):
                delta = -max(1, round(now * rng.uniform(0.25, 1.0)))
            elif cap > now:
                delta = max(1, round((cap - now) * rng.uniform(0.1, 0.5)))
            else:
                continue
            shift = LayerShift(i, kind, delta)
            if self.legal(plan, shift):
                return shift
        return None

    def options(self, plan: PruningPlan, rng: random.Random, count: int, shifts: int = 0) -> list[PlanMove | LayerShift]:
        """`count` distinct legal moves (fewer if the plan has no more), `shifts` of them layer shifts."""
        seen, out = set(), []
        for _ in range(shifts * 5):
            shift = self.random_shift(plan, rng)
            if shift is not None and shift not in seen and len(out) < shifts:
                seen.add(shift)
                out.append(shift)
        for _ in range(count * 20):
            if len(out) >= count:
                break
            move = self.random_move(plan, rng)
            if move is not None and move not in seen:
                seen.add(move)
                out.append(move)
                if len(out) == count:
                    break
        return out

    def mutate(self, plan: PruningPlan, rng: random.Random, moves: int) -> tuple[PruningPlan, list[PlanMove]]:
        done = []
        for _ in range(moves):
            move = self.random_move(plan, rng)
            if move is None:
                break
            plan = apply(plan, move)
            done.append(move)
        return plan, done

    # -- onto the budget ------------------------------------------------------------------------
    def rebalance(self, plan: PruningPlan, rng: random.Random, held: int | None = None) -> PruningPlan:
        """The plan on the budget in whole units: while above the budget, one more MLP unit goes
        where the plan prunes least (ties at random); while one unit could come back without
        crossing the budget, it comes back where the plan prunes most. Layer `held` is left as it is."""
        space, target = self.space, self.budget.target_params
        units = _units(plan)
        n = space.num_layers
        free = [i for i in range(n) if i != held]
        for i in range(n):  # the bounds first
            for k in KINDS:
                units[i][_index(k)] = max(0, min(units[i][_index(k)], self.capacity[(i, k)]))

        def share(i: int) -> float:
            return space.removed_params(i, LayerPlan(*units[i])) / space.layer_params(i)

        total = space.total_params(_plan(units))
        while total > target:
            room = [i for i in free if units[i][1] < self.capacity[(i, "mlp")]]
            if not room:
                room_attn = [i for i in free if units[i][0] < self.capacity[(i, "attn")]]
                if not room_attn:
                    raise ValueError("the budget cannot be met within the rate bounds")
                i = min(room_attn, key=lambda i: (share(i), rng.random()))
                units[i][0] += 1
            else:
                i = min(room, key=lambda i: (share(i), rng.random()))
                units[i][1] += 1
            total = space.total_params(_plan(units))
        while True:
            given = sorted((i for i in free if units[i][1] > 0), key=lambda i: (-share(i), rng.random()))
            for i in given:
                units[i][1] -= 1
                if space.total_params(_plan(units)) <= target:
                    break
                units[i][1] += 1
            else:
                return _plan(units)
