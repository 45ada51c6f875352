"""Move-based answers: instead of writing whole genomes, the LLM picks from enumerated options.

A small model chooses among listed options far better than it invents 30 consistent numbers
(asked for 30 varied rates with a given mean, the embedded 135M model returned one value 30
times). A *move* takes `step` of pruning from one genome position and gives it to another, so it
preserves the average; a *crossover option* says which parent each position comes from. The
options are drawn by code (half guided by calibration importance, half at random), shown as a
numbered list, and the answer is a list of indices per requested genome.
"""
from __future__ import annotations

from dataclasses import dataclass

from agents.types import RoleContext

STEPS = (0.02, 0.05, 0.10)


@dataclass(frozen=True)
class Move:
    prune_more: int  # genome position that gets `step` more pruning
    prune_less: int  # genome position that gets `step` less
    step: float

    def apply(self, rates: list[float], lo: float, hi: float) -> list[float]:
        delta = min(self.step, rates[self.prune_less] - lo, hi - rates[self.prune_more])
        out = list(rates)
        if delta > 0:
            out[self.prune_more] += delta
            out[self.prune_less] -= delta
        return out


def position_names(ctx: RoleContext) -> list[str]:
    n = ctx.space.num_layers
    if ctx.granularity == "layer":
        return [f"layer {i}" for i in range(n)]
    return [f"attention {i}" for i in range(n)] + [f"mlp {i}" for i in range(n)]


def position_importance(ctx: RoleContext) -> list[float]:
    """Calibration importance per genome position (mean 1); 1.0 everywhere when unknown."""
    n = ctx.space.num_layers
    if not ctx.layer_importance:
        return [1.0] * (n if ctx.granularity == "layer" else 2 * n)
    if ctx.granularity == "layer":
        return [(a + m) / 2 for a, m in ctx.layer_importance]
    return [a for a, _ in ctx.layer_importance] + [m for _, m in ctx.layer_importance]


def enumerate_moves(ctx: RoleContext, count: int = 16) -> list[Move]:
    """`count` distinct moves: half from a less important position's spare capacity to a more
    important one (prune the unimportant more), half between random positions."""
    importance = position_importance(ctx)
    length = len(importance)
    order = sorted(range(length), key=lambda i: importance[i])
    third = max(1, length // 3)
    low, high = order[:third], order[-third:]
    guided = [(m, l, st) for m in low for l in high if m != l for st in STEPS]
    anywhere = [(m, l, st) for m in range(length) for l in range(length) if m != l for st in STEPS]
    ctx.rng.shuffle(guided)
    ctx.rng.shuffle(anywhere)
    moves: list[Move] = []
    seen: set[tuple[int, int, float]] = set()
    sources = [iter(guided), iter(anywhere)]
    while len(moves) < count:  # alternate guided and random; a small genome runs out of guided ones
        source = sources[len(moves) % 2]
        pick = next((c for c in source if c not in seen), None)
        if pick is None:
            pick = next((c for c in sources[1] if c not in seen), None)
            if pick is None:
                break
        seen.add(pick)
        moves.append(Move(*pick))
    return moves


def moves_text(ctx: RoleContext, moves: list[Move]) -> str:
    names, importance = position_names(ctx), position_importance(ctx)
    lines = []
    for k, m in enumerate(moves):
        pts = int(round(m.step * 100))
        lines.append(f"{k}: prune {names[m.prune_more]} +{pts}% (importance {importance[m.prune_more]:.2f}), "
                     f"{names[m.prune_less]} -{pts}% (importance {importance[m.prune_less]:.2f})")
    return "\n".join(lines)


def apply_moves(ctx: RoleContext, rates: list[float], moves: list[Move], chosen: list[int]) -> list[float]:
    for index in chosen:
        rates = moves[index].apply(rates, ctx.space.min_rate, ctx.space.max_rate)
    return rates


# -- crossover options -------------------------------------------------------------------------

def crossover_options(ctx: RoleContext) -> list[tuple[str, list[bool]]]:
    """(description, mask) pairs; mask[i] True = position i from parent A, else from parent B."""
    names = position_names(ctx)
    length = len(names)
    half, third = length // 2, max(1, length // 3)
    options = [
        (f"first half from A ({names[0]}..{names[half - 1]}), rest from B", [i < half for i in range(length)]),
        (f"first half from B, rest from A ({names[half]}..{names[-1]})", [i >= half for i in range(length)]),
        ("first third from A, rest from B", [i < third for i in range(length)]),
        ("last third from A, rest from B", [i >= length - third for i in range(length)]),
        ("even positions from A, odd from B", [i % 2 == 0 for i in range(length)]),
        ("middle third from A, ends from B", [third <= i < length - third for i in range(length)]),
    ]
    if ctx.granularity == "module":
        n = ctx.space.num_layers
        options.append(("attention rates from A, MLP rates from B", [i < n for i in range(length)]))
    options.append(("the average of A and B", []))  # empty mask = blend
    return options


def options_text(options: list[tuple[str, list[bool]]]) -> str:
    return "\n".join(f"{k}: {text}" for k, (text, _) in enumerate(options))


def cross(a: list[float], b: list[float], mask: list[bool]) -> list[float]:
    if not mask:
        return [(x + y) / 2 for x, y in zip(a, b)]
    return [x if take_a else y for x, y, take_a in zip(a, b, mask)]
