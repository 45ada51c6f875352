"""Placement: --max-memory, CPU / disk offload through accelerate, and every stage on offloaded
weights (importance, fingerprint, fitness, in-place pruning) giving what the resident model gives."""
from __future__ import annotations

import json
import weakref

import pytest
import torch

from pruning.context import PruningContext, build_context
from pruning.data import TokenWindows
from pruning.genome import Genome
from pruning.importance import model_fingerprint
from pruning.loading import load_model
from pruning.placement import (
    OutOfMemory,
    PlacementError,
    input_device,
    is_dispatched,
    materialized,
    parse_max_memory,
    parse_size,
)
from pruning.prepare import make_budget, make_space, PruneSettings
from pruning.repair import repair
from evaluation.fitness import FitnessEvaluator

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 256,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 8, "num_hidden_layers": 4,
        "vocab_size": 300, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "hidden_act": "silu", "initializer_range": 0.5}


@pytest.fixture
def tiny_dir(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    return folder


def windows(n=4, seqlen=32, seed=0) -> TokenWindows:
    ids = torch.randint(0, 300, (n, seqlen), generator=torch.Generator().manual_seed(seed))
    return TokenWindows(ids, source="random", split="validation")


def test_parse_max_memory_and_sizes():
    assert parse_size("70GiB") == 70 * 2**30
    assert parse_size("700MB") == 700_000_000
    assert parse_max_memory("0=70GiB,1=70GiB,cpu=200GiB") == {0: 70 * 2**30, 1: 70 * 2**30, "cpu": 200 * 2**30}
    assert parse_max_memory("cuda:1=1GB") == {1: 10**9}
    for bad in ("gpu=3GB", "0:70GiB", "cpu=lots", "cpu=5XB"):
        with pytest.raises(PlacementError):
            parse_max_memory(bad)


def test_a_small_cpu_budget_offloads_to_disk_and_gives_the_same_logits(tiny_dir, tmp_path):
    # bf16 (the sizes below are set for it; `auto` is fp32 on CPUs without native bf16)
    resident = load_model(str(tiny_dir), device="cpu", random_weights=True, dtype="bfloat16")
    split = load_model(str(tiny_dir), device="cpu", random_weights=True, max_memory="cpu=300KB",
                       offload_folder=str(tmp_path / "offload"), dtype="bfloat16")
    placement = split.model.self_pruner_placement
    assert set(placement.devices) == {"cpu", "disk"}
    assert "model.layers.3" in placement.offloaded()
    assert "disk" in placement.describe() and "layers" in placement.describe()
    assert is_dispatched(split.model) and not is_dispatched(resident.model)
    # offloaded weights live on meta between forwards; materialized() brings them in
    down = split.model.model.layers[3].mlp.down_proj
    assert down.weight.device.type == "meta"
    with materialized(down):
        assert torch.equal(down.weight, resident.model.model.layers[3].mlp.down_proj.weight)
    assert down.weight.device.type == "meta"
    ids = windows(2, 16).input_ids
    with torch.no_grad():
        assert torch.equal(split.model(ids).logits, resident.model(ids).logits)
    assert input_device(split.model).type == "cpu"


def test_disk_offload_without_a_folder_is_refused(tiny_dir):
    with pytest.raises(PlacementError, match="--offload-folder"):
        load_model(str(tiny_dir), device="cpu", random_weights=True, max_memory="cpu=300KB")


def _context(model) -> PruningContext:
    context, _ = build_context(model, make_space(model, PruneSettings()), "wanda-sp", windows(), cache_dir=None)
    return context


def test_every_stage_on_offloaded_weights_matches_the_resident_model(tiny_dir, tmp_path):
    resident = load_model(str(tiny_dir), device="cpu", random_weights=True, dtype="float32").model
    split = load_model(str(tiny_dir), device="cpu", random_weights=True, dtype="float32", max_memory="cpu=800KB",
                       offload_folder=str(tmp_path / "offload")).model  # fp32: 2 layers in RAM, 2 on disk
    assert model_fingerprint(split) == model_fingerprint(resident)
    a, b = _context(resident), _context(split)
    for x, y in zip(a.scores.layers, b.scores.layers):
        assert torch.allclose(x.head_scores, y.head_scores) and torch.allclose(x.channel_scores, y.channel_scores)
    budget = make_budget(a.space, None, 0.4, "layer")
    plan = repair(Genome("layer", (0.2, 0.6, 0.3, 0.5)), a.space, budget).plan
    fa = FitnessEvaluator(a, windows(2, 32, seed=3), mode="masked").evaluate(plan).value
    fb = FitnessEvaluator(b, windows(2, 32, seed=3), mode="auto").evaluate(plan).value  # auto: masked when offloaded
    assert fa == pytest.approx(fb, rel=1e-6)
    # In place, layer by layer: the pruned model keeps the placement and gives the sliced copy's logits.
    copy_logits = a.prune(plan)(windows(2, 16).input_ids).logits
    resident_weights = [weakref.ref(split.model.layers[i].mlp.down_proj.weight) for i in range(4)
                        if split.self_pruner_placement.device_map[f"model.layers.{i}"] == "cpu"]
    assert resident_weights  # some layers stay in RAM under this budget
    pruned = b.prune_in_place(plan, offload_folder=str(tmp_path / "offload" / "pruned"))
    # freed at once, not when the cyclic GC gets round to it (accelerate's hooks form cycles)
    assert all(ref() is None for ref in resident_weights)
    assert pruned.self_pruner_placement.device_map == split.self_pruner_placement.device_map
    assert pruned.model.layers[3].mlp.down_proj.weight.device.type == "meta"  # still on disk
    assert all(len(list(layer.parameters())) == 0 for layer in split.model.layers)  # dense layers freed
    with torch.no_grad():
        assert torch.allclose(pruned(windows(2, 16).input_ids).logits, copy_logits, atol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_in_place_pruning_equals_the_copy_on_one_device(tie):
    from tests.tiny import tiny_inputs, tiny_llama

    dense = tiny_llama(seed=2, tie=tie)
    twin = tiny_llama(seed=2, tie=tie)
    a, b = _context_on(dense), _context_on(twin)
    budget = make_budget(a.space, None, 0.35, "module")
    plan = repair(Genome("module", (0.25, 0.5, 0.0, 0.75, 0.5, 0.25, 0.5, 0.0)), a.space, budget).plan
    expected = a.prune(plan)(tiny_inputs()).logits
    pruned = b.prune_in_place(plan)
    assert torch.allclose(pruned(tiny_inputs()).logits, expected, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) == a.space.total_params(plan)
    assert (pruned.lm_head.weight is pruned.model.embed_tokens.weight) == tie


def _context_on(model) -> PruningContext:
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    context, _ = build_context(model, make_space(model, PruneSettings()), "wanda-sp",
                               TokenWindows(ids, source="random", split="validation"), cache_dir=None)
    return context


def test_out_of_memory_in_a_stage_is_one_line_naming_it():
    from ui.console import stage

    with pytest.raises(OutOfMemory) as caught:
        with stage("calibration"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has ...")
    text = str(caught.value)
    assert "during calibration" in text and "1.50 GiB" in text and "--max-memory" in text
    assert "\n" not in text


def test_weights_read_from_a_mapped_checkpoint_give_their_pages_back(tmp_path):
    """transformers maps a same-dtype safetensors checkpoint: freeing a layer pruned in place would
    not unmap it. The pages are handed back; the data stays readable (read again from the file)."""
    import sys

    from transformers import LlamaForCausalLM

    from pruning.placement import release_file_pages
    from tests.tiny import tiny_llama

    tiny_llama(layers=2).save_pretrained(tmp_path / "ckpt")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32)
    weight = model.model.layers[0].mlp.down_proj.weight
    before = weight.detach().clone()
    advised = release_file_pages([weight])
    if sys.platform.startswith("linux"):
        assert advised > 0  # a view into the mapped file, whole pages of it handed back
    assert torch.equal(weight.detach(), before)
    assert release_file_pages([before]) == 0  # anonymous memory is left alone
