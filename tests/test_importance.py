import torch

from pruning.adapter import DecoderAdapter
from pruning.data import TokenWindows
from pruning.importance import (
    ActivationStats,
    collect_activation_stats,
    compute_importance,
    load_or_collect_stats,
    wanda_outlier_ratios,
)
from tests.tiny import tiny_inputs, tiny_llama


def down_proj_inputs(model, x):
    captured = []
    handle = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return torch.cat([c.reshape(-1, c.shape[-1]) for c in captured]).double()


def test_stats_match_direct_computation():
    model, x = tiny_llama(), tiny_inputs(4, 24)
    stats = collect_activation_stats(model, TokenWindows(x, "t", "v"), batch_size=3)  # 2 uneven batches
    inputs = down_proj_inputs(model, x)
    site = stats.layers[1]["mlp_hidden"]
    assert site.count == 4 * 24
    assert torch.allclose(site.mean, inputs.mean(0), atol=1e-6)
    assert torch.allclose(site.variance, inputs.var(0), atol=1e-5, rtol=1e-5)


def test_wanda_sp_and_flap_formulas():
    model, x = tiny_llama(), tiny_inputs(4, 24)
    stats = collect_activation_stats(model, TokenWindows(x, "t", "v"))
    inputs = down_proj_inputs(model, x)
    w = model.model.layers[1].mlp.down_proj.weight.detach().double()
    wanda = (w.abs() * inputs.pow(2).mean(0).sqrt()).mean(0)
    flap = inputs.var(0) * w.pow(2).sum(0)
    assert torch.allclose(compute_importance(model, stats, "wanda-sp").layers[1].channel_scores.double(), wanda, rtol=1e-4)
    assert torch.allclose(compute_importance(model, stats, "flap").layers[1].channel_scores.double(), flap, rtol=1e-4)
    heads = compute_importance(model, stats, "wanda-sp").layers[0].head_scores
    assert heads.shape == (8,)


def test_head_score_sums_its_columns():
    model = tiny_llama()
    stats = collect_activation_stats(model, TokenWindows(tiny_inputs(), "t", "v"))
    scores = compute_importance(model, stats, "magnitude")
    w = model.model.layers[2].self_attn.o_proj.weight.detach().abs().sum(0)
    assert torch.allclose(scores.layers[2].head_scores, w.view(8, 8).sum(1), rtol=1e-5)


def test_stats_cache_roundtrip(tmp_path):
    model, windows = tiny_llama(), TokenWindows(tiny_inputs(), "t", "v")
    first, cached1 = load_or_collect_stats(model, windows, tmp_path, "k1")
    second, cached2 = load_or_collect_stats(model, windows, tmp_path, "k1")
    assert (cached1, cached2) == (False, True)
    assert isinstance(second, ActivationStats)
    assert torch.equal(first.layers[3]["attn_heads"].sumsq, second.layers[3]["attn_heads"].sumsq)


def test_outlier_ratios_are_shares():
    model = tiny_llama()
    stats = collect_activation_stats(model, TokenWindows(tiny_inputs(), "t", "v"))
    ratios = wanda_outlier_ratios(model, stats, threshold=2.0)
    assert len(ratios) == DecoderAdapter(model).num_layers
    assert all(0.0 <= r < 1.0 for r in ratios) and any(r > 0 for r in ratios)
