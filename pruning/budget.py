"""The size of the result: `--budget` ("35b", "7.5B", "800m", "50%", "0.5") or `--rate`.

A budget is a total parameter count (embeddings included). `--rate R` is the paper's average
per-layer pruning rate: the decoder blocks lose R of their parameters, embeddings stay.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pruning.shape import ModelShape

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbt%]?)\s*$", re.IGNORECASE)


class BudgetError(ValueError):
    pass


@dataclass(frozen=True)
class Budget:
    target_params: int  # total parameters of the pruned model, at most
    dense_params: int
    block_params: int  # dense decoder-block parameters
    description: str  # what the user asked for

    @property
    def removed_params(self) -> int:
        return self.dense_params - self.target_params

    @property
    def average_rate(self) -> float:
        """The paper's beta: share of decoder-block parameters removed."""
        return self.removed_params / self.block_params

    def to_dict(self) -> dict:
        return {"target_params": self.target_params, "dense_params": self.dense_params,
                "block_params": self.block_params, "average_rate": round(self.average_rate, 6),
                "description": self.description}


def parse_param_count(text: str, dense_params: int) -> int:
    """'35b' -> 35e9, '800m' -> 8e8, '50%' or '0.5' -> half of the dense total."""
    match = _PATTERN.match(str(text))
    if not match:
        raise BudgetError(f"cannot read budget {text!r}: use a count like 35b, 7.5B, 800m, or a share like 50% or 0.5")
    value, suffix = float(match.group(1)), match.group(2).lower()
    if suffix == "%":
        if not 0 < value <= 100:
            raise BudgetError(f"budget {text!r}: a percentage must be in (0, 100]")
        return int(math.floor(dense_params * value / 100))
    if suffix == "" and 0 < value <= 1:
        return int(math.floor(dense_params * value))
    count = value * _SUFFIX[suffix]
    if count < 1:
        raise BudgetError(f"budget {text!r} is not a positive parameter count")
    return int(count)


def budget_from_args(shape: ModelShape, budget: str | None, rate: float | None, min_params: int) -> Budget:
    """Exactly one of budget / rate; checks it against the model's size and the bounds."""
    dense, blocks = shape.total_params(), shape.block_params()
    if (budget is None) == (rate is None):
        raise BudgetError("give exactly one of --budget (e.g. 35b, 50%) or --rate (e.g. 0.2)")
    if rate is not None:
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and 0 <= rate < 1):
            raise BudgetError(f"--rate {rate} is outside [0, 1): it is the share of decoder-block parameters removed")
        target, description = dense - int(round(rate * blocks)), f"rate {rate:g}"
    else:
        target, description = parse_param_count(budget, dense), f"budget {budget}"
    embeddings = dense - blocks
    if target > dense:
        raise BudgetError(f"{description} = {format_params(target)} params is above the model's size ({format_params(dense)}): nothing to prune")
    if target <= embeddings:
        raise BudgetError(
            f"{description} = {format_params(target)} params is below the embeddings and final norm alone ({format_params(embeddings)})"
        )
    if target < min_params:
        raise BudgetError(
            f"{description} = {format_params(target)} params is below the smallest model the rate bounds allow "
            f"({format_params(min_params)}); raise the budget or --max-rate"
        )
    return Budget(target_params=target, dense_params=dense, block_params=blocks, description=description)


HEAVY_RATE = 0.6  # above this share of block parameters removed, structured pruning without retraining breaks models


def heavy_budget_warning(budget: Budget) -> str | None:
    """A budget that removes most of the decoder blocks, said before any work (the embeddings are not
    pruned: on a small-vocabulary-heavy model a modest-looking budget lands mostly on the blocks)."""
    if budget.average_rate <= HEAVY_RATE:
        return None
    embeddings = budget.dense_params - budget.block_params
    return (f"{budget.description} = {format_params(budget.target_params)} params removes {budget.average_rate:.0%} of "
            f"the decoder blocks' parameters on average (the embeddings, {embeddings / budget.dense_params:.0%} of "
            f"the model, are not pruned): without retraining a model pruned that far is broken (Gemma-3-270M at "
            f"78%: test PPL 28.5 -> 66,637). A larger budget keeps it usable")


def format_params(n: int) -> str:
    """134515008 -> '134.515M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(n)
