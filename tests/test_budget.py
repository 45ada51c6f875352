import math

import pytest

from pruning.budget import BudgetError, budget_from_args, parse_param_count
from pruning.shape import LayerShape, ModelShape

DENSE = 70_000_000_000


@pytest.mark.parametrize("text,expected", [
    ("35b", 35_000_000_000), ("7.5B", 7_500_000_000), ("800m", 800_000_000), ("800M", 800_000_000),
    ("50%", 35_000_000_000), ("0.5", 35_000_000_000), ("12k", 12_000), ("123456789", 123_456_789),
    (" 35 b ", 35_000_000_000), ("1e9", 1_000_000_000), ("100%", DENSE),
])
def test_parse_good_budgets(text, expected):
    assert parse_param_count(text, DENSE) == expected


@pytest.mark.parametrize("text", ["", "abc", "35x", "-5b", "0", "0%", "150%", "b35", "3.5.1b", "nan", "inf"])
def test_parse_bad_budgets(text):
    with pytest.raises(BudgetError):
        parse_param_count(text, DENSE)


def small_shape() -> ModelShape:
    layer = LayerShape(num_attention_heads=8, num_key_value_heads=2, intermediate_size=256)
    return ModelShape(hidden_size=64, head_dim=8, vocab_size=128, tie_word_embeddings=False, layers=(layer,) * 4)


def test_rate_budget_removes_share_of_blocks():
    shape = small_shape()
    budget = budget_from_args(shape, None, 0.25, min_params=0)
    assert budget.target_params == shape.total_params() - round(0.25 * shape.block_params())
    assert math.isclose(budget.average_rate, 0.25, abs_tol=1e-6)


@pytest.mark.parametrize("budget,rate,fragment", [
    (None, None, "exactly one"),
    ("10m", 0.2, "exactly one"),
    (None, 1.0, "outside [0, 1)"),
    (None, -0.1, "outside [0, 1)"),
    (None, float("nan"), "outside [0, 1)"),
    ("1b", None, "above the model's size"),
    ("1k", None, "below the embeddings"),
])
def test_budget_errors_name_the_problem(budget, rate, fragment):
    with pytest.raises(BudgetError, match=fragment.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        budget_from_args(small_shape(), budget, rate, min_params=0)


def test_budget_below_bounds_minimum():
    shape = small_shape()
    minimum = shape.total_params() - shape.block_params() // 2
    with pytest.raises(BudgetError, match="smallest model the rate bounds allow"):
        budget_from_args(shape, None, 0.8, min_params=minimum)


def test_a_budget_that_removes_most_of_the_blocks_is_said_before_any_work():
    from pruning.budget import Budget, heavy_budget_warning

    # Gemma-3-270M's shape in numbers: embeddings 63% of the model; 190m of 268m removes 78% of the blocks
    gemma = Budget(target_params=190_000_000, dense_params=268_098_176, block_params=100_000_000,
                   description="budget 190m")
    warning = heavy_budget_warning(gemma)
    assert warning and "78% of the decoder blocks" in warning and "63% of the model" in warning
    assert heavy_budget_warning(Budget(213_000_000, 268_098_176, 100_000_000, "rate 0.55")) is None
