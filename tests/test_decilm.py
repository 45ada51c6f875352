import json

import pytest
import torch
from safetensors.torch import load_file

from pruning.decilm import decilm_config, decilm_expressible, export_decilm
from pruning.genome import PruningPlan
from tests.test_pruning_equivalence import make_context
from tests.tiny import tiny_llama


def test_mlp_only_plan_exports_with_exact_widths(tmp_path):
    model = tiny_llama()
    context = make_context(model, "query", "flap", True)
    plan = PruningPlan.from_list([[0, 1], [0, 4], [0, 0], [0, 7]])
    assert decilm_expressible(context.space, plan)
    pruned = context.prune(plan)
    out = export_decilm(pruned, None, tmp_path / "deci", {})
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DeciLMForCausalLM"]
    widths = [block["ffn"]["intermediate_size"] for block in config["block_configs"]]
    assert widths == [256 - 16, 256 - 64, 256, 256 - 112]
    # vLLM: num_kv_heads = num_attention_heads // n_heads_in_group
    assert all(8 // b["attention"]["n_heads_in_group"] == 2 for b in config["block_configs"])
    state = load_file(str(out / "model.safetensors"))
    assert state["model.layers.3.mlp.down_proj.weight"].shape == (64, 256 - 112)
    # compensation biases need global flags: zero biases fill layers without one
    assert torch.count_nonzero(state["model.layers.2.mlp.down_proj.bias"]) == 0
    assert torch.count_nonzero(state["model.layers.1.mlp.down_proj.bias"]) > 0


def test_attention_pruning_is_not_expressible():
    model = tiny_llama()
    context = make_context(model, "query", "wanda-sp", False)
    plan = PruningPlan.from_list([[1, 0], [0, 0], [0, 0], [0, 0]])
    assert not decilm_expressible(context.space, plan)
    with pytest.raises(ValueError, match="query heads"):
        decilm_config(context.prune(plan))


def test_export_is_sharded_with_an_index(tmp_path):
    from safetensors.torch import load_file as load

    from pruning.checkpoint import save_sharded

    model = tiny_llama()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    files = save_sharded(state, tmp_path / "shards", max_shard_bytes=60_000)
    assert len(files) > 2
    index = json.loads((tmp_path / "shards" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    for name, filename in index["weight_map"].items():
        assert torch.equal(load(str(tmp_path / "shards" / filename))[name], state[name])
