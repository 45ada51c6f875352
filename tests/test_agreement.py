"""KL to a reference model and top-1 agreement (`eval --kl-base`)."""
import pytest
import torch

from evaluation.agreement import compare, reference_top_k
from pruning.genome import PruningPlan
from tests.test_pruning_equivalence import make_context
from tests.tiny import tiny_inputs, tiny_llama


def test_a_model_agrees_with_itself_and_a_pruned_one_less():
    model = tiny_llama()
    ids = tiny_inputs(3, 32, seed=7)
    reference = reference_top_k(model, ids, batch_size=2)
    same = compare(model, ids, reference, batch_size=2)
    assert same["kl"] == pytest.approx(0.0, abs=1e-5) and same["top1_agreement"] == 1.0 and same["tokens"] == 3 * 31
    pruned = make_context(model, "query", "wanda-sp", False).prune(PruningPlan.from_list([[2, 8], [2, 8], [2, 8], [2, 8]]))
    apart = compare(pruned, ids, reference, batch_size=2)
    assert apart["kl"] > 0.01 and apart["top1_agreement"] < 1.0
    with pytest.raises(ValueError, match="not the same windows"):
        compare(model, ids[:2], reference)
    assert torch.equal(reference_top_k(model, ids, batch_size=3)[1], reference[1])  # batching does not matter
