"""Masked == sliced, keep-all == dense, realised counts == numel, save -> reload == same logits."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from pruning.adapter import DecoderAdapter
from pruning.budget import budget_from_args
from pruning.checkpoint import read_record, save_pruned
from pruning.context import PruningContext, Reconstruction
from pruning.data import TokenWindows
from pruning.genome import Genome, PruningPlan
from pruning.importance import collect_activation_stats, compute_importance
from pruning.repair import repair
from pruning.space import PruningSpace
from tests.tiny import tiny_inputs, tiny_llama

CASES = [  # (gqa, granularity, metric, bias compensation, tied embeddings, q/k/v/o biases)
    ("query", "layer", "wanda-sp", False, False, False),
    ("group", "layer", "wanda-sp", False, True, False),
    ("query", "module", "flap", True, False, False),
    ("group", "module", "flap", True, True, True),
    ("query", "module", "magnitude", False, False, True),
]


def make_context(model, gqa, metric, compensate, calibration_windows: int = 4) -> PruningContext:
    """compensate: True (FLAP's bias), False (nothing), or a --reconstruct mode (ls, bias, off)."""
    mode = compensate if isinstance(compensate, str) else ("bias" if compensate else "off")
    space = PruningSpace(DecoderAdapter(model).shape(), gqa=gqa, mlp_unit=16, adds_bias=mode != "off")
    calibration = TokenWindows(tiny_inputs(calibration_windows, 32, seed=7), "random", "calib")
    stats = collect_activation_stats(model, calibration)
    return PruningContext(model, space, stats, compute_importance(model, stats, metric),
                          reconstruction=Reconstruction(mode, calibration=calibration))


def rates_for(granularity: str) -> Genome:
    layer = (0.1, 0.55, 0.3, 0.45)
    return Genome(granularity, layer if granularity == "layer" else layer + (0.2, 0.5, 0.35, 0.6))


@pytest.mark.parametrize("gqa,granularity,metric,compensate,tie,bias", CASES)
def test_masked_equals_sliced_and_counts_are_exact(gqa, granularity, metric, compensate, tie, bias):
    model = tiny_llama(tie=tie, attention_bias=bias)
    context = make_context(model, gqa, metric, compensate)
    budget = budget_from_args(context.space.shape, None, 0.35, context.space.min_total_params(granularity))
    result = repair(rates_for(granularity), context.space, budget)
    assert any(p.attn_units_removed for p in result.plan.layers), "the case should remove attention units"
    x = tiny_inputs()
    with torch.no_grad():
        dense_logits = model(x).logits
        with context.masked(result.plan):
            masked_logits = model(x).logits
        pruned = context.prune(result.plan)
        sliced_logits = pruned(x).logits
    assert torch.allclose(masked_logits, sliced_logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(masked_logits, dense_logits, atol=1e-3)  # pruning did change the model
    # After the masks are gone the dense model is itself again.
    with torch.no_grad():
        assert torch.equal(model(x).logits, dense_logits)
    numel = sum(p.numel() for p in pruned.parameters())  # tied weights are counted once
    assert numel == result.total_params == context.space.total_params(result.plan)
    assert result.block_params == sum(p.numel() for p in pruned.model.layers.parameters())


@pytest.mark.parametrize("gqa", ["query", "group"])
def test_keep_all_plan_equals_dense(gqa):
    model = tiny_llama()
    context = make_context(model, gqa, "flap", True)
    plan = PruningPlan.keep_all(4)
    x = tiny_inputs()
    with torch.no_grad():
        dense = model(x).logits
        with context.masked(plan):
            masked = model(x).logits
        sliced = context.prune(plan)(x).logits
    assert torch.equal(masked, dense)
    assert torch.allclose(sliced, dense, atol=1e-6, rtol=0)


def test_gqa_modes_remove_the_right_heads():
    model = tiny_llama()
    for gqa, expect_heads, expect_kv in (("query", 6, 2), ("group", 4, 1)):
        context = make_context(model, gqa, "wanda-sp", False)
        plan = PruningPlan.from_list([[1, 0], [0, 0], [0, 0], [0, 0]])
        pruned = context.prune(plan)
        attn = pruned.model.layers[0].self_attn
        assert attn.q_proj.out_features == expect_heads * 8
        assert attn.k_proj.out_features == expect_kv * 8
        assert attn.num_key_value_groups == expect_heads // expect_kv
        selection = context.selections(plan)[0]
        if gqa == "query":  # one query head from each of the two KV groups
            assert sorted(int(h) // 4 for h in selection.kept_heads) == [0, 0, 0, 1, 1, 1]
        else:  # one whole group: four query heads and their KV head
            kept_group = int(selection.kept_kv_heads[0])
            assert selection.kept_heads.tolist() == [kept_group * 4 + j for j in range(4)]


def test_lowest_scoring_units_are_removed():
    model = tiny_llama()
    context = make_context(model, "query", "wanda-sp", False)
    plan = PruningPlan.from_list([[0, 3], [0, 0], [0, 0], [0, 0]])
    selection = context.selections(plan)[0]
    scores = context.scores.layers[0].channel_scores
    removed = sorted(set(range(256)) - set(selection.kept_channels.tolist()))
    assert len(removed) == 48
    assert scores[removed].max() <= scores[selection.kept_channels].min()


@pytest.mark.parametrize("tie", [False, True])
def test_save_and_reload_gives_identical_logits(tmp_path, tie):
    model = tiny_llama(tie=tie)
    context = make_context(model, "query", "flap", True)
    budget = budget_from_args(context.space.shape, None, 0.3, 0)
    result = repair(rates_for("module"), context.space, budget)
    pruned = context.prune(result.plan)
    save_pruned(pruned, None, tmp_path / "ckpt", {"plan": result.plan.to_list()})
    reloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", trust_remote_code=True, attn_implementation="eager"  # same kernel as the original
    ).eval()
    x = tiny_inputs()
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, pruned(x).logits)
    assert sum(p.numel() for p in reloaded.parameters()) == result.total_params
    assert read_record(tmp_path / "ckpt")["plan"] == result.plan.to_list()
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_pruned.PrunedLlamaForCausalLM"
    assert len(set(config["layer_intermediate_size"])) > 1  # heterogeneous widths survived


def test_pruned_model_generates_with_kv_cache():
    model = tiny_llama()
    context = make_context(model, "group", "wanda-sp", False)
    plan = PruningPlan.from_list([[1, 2], [0, 5], [1, 0], [0, 1]])
    pruned = context.prune(plan)
    prompt = tiny_inputs(1, 5)
    with torch.no_grad():
        cached = pruned.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = pruned.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
        with context.masked(plan):
            masked = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, masked)
