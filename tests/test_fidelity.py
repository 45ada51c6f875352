"""Multi-fidelity fitness: stages, fresh samples, the coarse KL and its cache."""
import math

import pytest
import torch
import torch.nn.functional as F

from evaluation.fidelity import SampledFitness, Stage, coarse_kl, parse_stages
from pruning.adapter import DecoderAdapter
from pruning.context import PruningContext
from pruning.data import TokenWindows
from pruning.genome import LayerPlan, PruningPlan
from pruning.importance import collect_activation_stats, compute_importance
from pruning.space import PruningSpace
from store.run_store import RunStore
from tests.tiny import tiny_inputs, tiny_llama


def test_parse_stages_and_its_errors():
    assert parse_stages("1x128:4, 2x256:2") == (Stage(1, 128, 4), Stage(2, 256, 2))
    assert parse_stages("1x128:4")[0].tokens == 128
    for bad, message in (("1x128", "WINDOWSxSEQLEN:KEPT"), ("2x256:2,1x128:4", "at least as many tokens"),
                         ("0x128:1", "windows, keep >= 1")):
        with pytest.raises(ValueError, match=message):
            parse_stages(bad)


def test_coarse_kl_equals_the_full_kl_when_the_top_k_holds_everything_and_bounds_it_otherwise():
    torch.manual_seed(0)
    p_logits, q_logits = torch.randn(5, 50) * 3, torch.randn(5, 50) * 3
    p, q = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    full = (p.exp() * (p - q)).sum(-1)
    assert torch.allclose(coarse_kl(p, q), full, atol=1e-5)  # K = the whole vocabulary
    top = p.topk(10, dim=-1)
    coarse = coarse_kl(top.values, q.gather(1, top.indices))
    assert (coarse <= full + 1e-6).all() and (coarse >= 0).all()  # coarsening never adds divergence


def tiny_fitness(tmp_path, kind="kl"):
    model = tiny_llama()
    space = PruningSpace(DecoderAdapter(model).shape(), mlp_unit=16)
    stats = collect_activation_stats(model, TokenWindows(tiny_inputs(4, 32, seed=3), "t", "v"))
    context = PruningContext(model, space, stats, compute_importance(model, stats, "wanda-sp"))
    store = RunStore(tmp_path / "run.db")
    store.start_run("t", "tiny", "rate 0.3", "x", {}, {})
    pool = TokenWindows(tiny_inputs(8, 32, seed=5), "t", "fit")
    return SampledFitness(context, pool, kind=kind, store=store, top_k=16), space


def test_samples_are_fresh_per_generation_and_stage_and_the_same_on_every_call(tmp_path):
    fitness, _ = tiny_fitness(tmp_path)
    stage = Stage(3, 16, 2)
    draws = {(g, s): tuple(fitness.draw(g, s, stage)) for g in range(4) for s in range(2)}
    assert len(set(draws.values())) > 4  # not one sample for everything
    assert all(tuple(fitness.draw(g, s, stage)) == d for (g, s), d in draws.items())


def test_scores_rank_plans_are_cached_per_sample_and_survive_a_new_process(tmp_path):
    fitness, space = tiny_fitness(tmp_path)
    dense = PruningPlan.keep_all(space.num_layers)
    heavy = PruningPlan(tuple(LayerPlan(space.attn_units(i) - 1, space.mlp_units(i) - 1) for i in range(space.num_layers)))
    stage = Stage(2, 32, 1)
    assert fitness.score(dense, 0, 0, stage).value == pytest.approx(0.0, abs=1e-4)  # the dense model vs itself
    first = fitness.score(heavy, 0, 0, stage)
    assert first.value > 0.01 and not first.cached
    assert fitness.score(heavy, 0, 0, stage).cached
    other = fitness.score(heavy, 1, 0, stage)  # another generation: another sample
    assert not other.cached and other.value != first.value
    again, _ = tiny_fitness(tmp_path)  # a resumed process reads the run database
    assert again.score(heavy, 0, 0, stage).value == first.value and again.known_keys() == {dense.key(), heavy.key()}
    (tmp_path / "ppl").mkdir()
    ppl, _ = tiny_fitness(tmp_path / "ppl", kind="ppl")
    assert 1 < ppl.score(heavy, 0, 0, stage).value < math.inf
