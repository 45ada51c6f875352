import pytest

from pruning.genome import Genome, PruningPlan
from pruning.data import TokenWindows
from tests.test_pruning_equivalence import make_context
from tests.tiny import tiny_inputs, tiny_llama
from evaluation.fitness import FitnessEvaluator


@pytest.fixture(scope="module")
def context():
    return make_context(tiny_llama(), "query", "flap", True)


def windows():
    return TokenWindows(tiny_inputs(3, 24, seed=11), "t", "fit")


def test_masked_and_sliced_fitness_agree(context):
    plan = context.space.snap(Genome("module", (0.3, 0.5, 0.2, 0.6, 0.2, 0.4, 0.5, 0.3)))
    for kind in ("ppl", "kl"):
        masked = FitnessEvaluator(context, windows(), kind=kind, mode="masked").evaluate(plan).value
        sliced = FitnessEvaluator(context, windows(), kind=kind, mode="sliced").evaluate(plan).value
        assert masked == pytest.approx(sliced, rel=1e-5, abs=1e-6)


def test_kl_of_the_dense_model_is_zero_and_pruning_raises_it(context):
    evaluator = FitnessEvaluator(context, windows(), kind="kl")
    assert evaluator.evaluate(PruningPlan.keep_all(4)).value == pytest.approx(0.0, abs=1e-4)
    plan = context.space.snap(Genome("layer", (0.5, 0.5, 0.5, 0.5)))
    assert evaluator.evaluate(plan).value > 0.01


def test_cache_and_auto_mode(context):
    evaluator = FitnessEvaluator(context, windows(), mode="auto")
    light = context.space.snap(Genome("layer", (0.1,) * 4))
    heavy = context.space.snap(Genome("layer", (0.5,) * 4))
    assert not evaluator.sliced(light) and evaluator.sliced(heavy)
    first = evaluator.evaluate(heavy)
    second = evaluator.evaluate(heavy)
    assert not first.cached and second.cached and first.value == second.value
    assert evaluator.evaluations == 1
    with pytest.raises(ValueError, match="--fitness"):
        FitnessEvaluator(context, windows(), kind="accuracy")
