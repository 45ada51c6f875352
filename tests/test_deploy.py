"""Exports for other runtimes, on tiny random models: the DeciLM padding is exact and has the
shapes vLLM's loader allocates; the GGUF runs in llama.cpp with the checkpoint's numbers."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from deploy.checkpoint_reader import CheckpointReader, ExportError
from deploy.decilm_export import pad_layer, write_decilm
from deploy.gguf_export import rope_permute, write_gguf
from pruning.checkpoint import save_pruned
from pruning.genome import PruningPlan
from pruning.hf_modeling import PrunedLlamaConfig, PrunedLlamaForCausalLM
from tests.test_pruning_equivalence import make_context
from tests.tiny import tiny_inputs, tiny_llama

# Different heads and widths in every layer. Query mode: a unit is one query head per KV group
# (tiny: 8 heads over 2 KV heads = 4 units); group mode: a unit is a whole KV group.
QUERY_PLAN = [[0, 1], [1, 4], [3, 0], [2, 7]]
GROUP_PLAN = [[1, 2], [0, 4], [1, 0], [0, 7]]


def saved_checkpoint(tmp_path, gqa="query", plan=QUERY_PLAN, compensate=False, tie=False, layers=4, family="llama"):
    from tests.tiny import tiny_family_model

    model = tiny_llama(tie=tie, layers=layers) if family == "llama" else tiny_family_model(family, tie=tie)
    context = make_context(model, gqa, "wanda-sp", compensate)
    pruned = context.prune(PruningPlan.from_list(plan))
    out = save_pruned(pruned, None, tmp_path / f"ckpt-{gqa}", {"plan": plan})
    return pruned, out


def decilm_reference(directory) -> PrunedLlamaForCausalLM:
    """The DeciLM folder run the way vLLM's DeciLMForCausalLM runs it: every layer at the model's
    query-head count, `num_attention_heads // n_heads_in_group` KV heads, `intermediate_size` channels."""
    from safetensors.torch import load_file

    config = json.loads((directory / "config.json").read_text())
    heads = config["num_attention_heads"]
    blocks = config["block_configs"]
    fields = {k: config[k] for k in ("hidden_size", "vocab_size", "rms_norm_eps", "max_position_embeddings",
                                     "head_dim", "tie_word_embeddings", "num_hidden_layers", "num_attention_heads")}
    reference_config = PrunedLlamaConfig(
        **fields, num_key_value_heads=config["num_key_value_heads"], intermediate_size=config["intermediate_size"],
        layer_num_attention_heads=[heads] * len(blocks),
        layer_num_key_value_heads=[heads // b["attention"]["n_heads_in_group"] for b in blocks],
        layer_intermediate_size=[b["ffn"]["intermediate_size"] for b in blocks],
        layer_o_proj_bias=[config["attention_bias"]] * len(blocks),
        layer_down_proj_bias=[config["mlp_bias"]] * len(blocks),
        qkv_bias=config["qkv_bias"], gate_up_bias=config["mlp_bias"],
    )
    reference_config._attn_implementation = "eager"
    model = PrunedLlamaForCausalLM(reference_config).eval()
    state = {}
    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    for name in files:
        state.update(load_file(str(directory / name)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    if config["tie_word_embeddings"]:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


@pytest.mark.parametrize("gqa,plan,compensate,family", [("query", QUERY_PLAN, False, "llama"),
                                                        ("group", GROUP_PLAN, False, "llama"),
                                                        ("query", QUERY_PLAN, True, "llama"),
                                                        ("query", QUERY_PLAN, "ls", "llama"),
                                                        ("group", GROUP_PLAN, False, "qwen2")])
def test_decilm_padding_is_exact(tmp_path, gqa, plan, compensate, family):
    pruned, ckpt = saved_checkpoint(tmp_path, gqa, plan, compensate, family=family)
    cost = write_decilm(ckpt, tmp_path / "deci", max_shard_bytes=40_000)
    assert (tmp_path / "deci" / "model.safetensors.index.json").exists()  # sharded
    config = json.loads((tmp_path / "deci" / "config.json").read_text())
    assert config["architectures"] == ["DeciLMForCausalLM"] and config["num_attention_heads"] == 8
    assert cost["query_heads_stored"] == 8 * 4 and cost["query_heads_real"] < cost["query_heads_stored"]
    x = tiny_inputs()
    with torch.no_grad():
        expected = pruned(x).logits
        got = decilm_reference(tmp_path / "deci")(x).logits
    assert torch.allclose(expected, got, atol=1e-5, rtol=1e-5)


def test_decilm_config_reads_as_vllm_reads_it(tmp_path):
    """vLLM's nemotron_nas.py: blocks are read as attributes, `hasattr(ffn, "ffn_mult")` picks the
    MLP sizing (absent: `ffn.intermediate_size`), KV heads = heads // n_heads_in_group; the q/k/v and
    gate/up weights are loaded under these names and stacked into qkv_proj / gate_up_proj."""
    from safetensors import safe_open
    from transformers import AutoConfig

    _, ckpt = saved_checkpoint(tmp_path, "group", GROUP_PLAN)
    write_decilm(ckpt, tmp_path / "deci")
    config = AutoConfig.from_pretrained(tmp_path / "deci", trust_remote_code=True)
    assert config.model_type == "nemotron-nas"
    head_dim = config.head_dim
    with safe_open(str(tmp_path / "deci" / "model.safetensors"), framework="pt") as f:
        for i, block in enumerate(config.block_configs):
            assert not block.attention.no_op and not block.ffn.no_op and not hasattr(block.ffn, "ffn_mult")
            assert config.num_attention_heads % block.attention.n_heads_in_group == 0
            kv = config.num_attention_heads // block.attention.n_heads_in_group
            p = f"model.layers.{i}."
            q, k, v = (f.get_slice(p + f"self_attn.{n}_proj.weight").get_shape() for n in "qkv")
            assert q[0] + k[0] + v[0] == (config.num_attention_heads + 2 * kv) * head_dim  # vLLM's qkv_proj rows
            assert f.get_slice(p + "self_attn.o_proj.weight").get_shape() == [config.hidden_size, config.num_attention_heads * head_dim]
            width = block.ffn.intermediate_size
            assert f.get_slice(p + "mlp.gate_proj.weight").get_shape() == [width, config.hidden_size]
            assert f.get_slice(p + "mlp.down_proj.weight").get_shape() == [config.hidden_size, width]


def test_padding_picks_the_next_divisor():
    layer = pad_layer(heads=10, kv=5, model_heads=32)  # 5 KV groups do not divide 32 query heads
    assert (layer.padded_kv, layer.group) == (8, 4)
    assert layer.head_map[:4] == [0, 1, None, None] and layer.head_map[-4:] == [None] * 4
    assert layer.kv_map == [0, 1, 2, 3, 4, None, None, None]


def test_rope_permutation_interleaves_each_head():
    rows = torch.arange(2 * 8, dtype=torch.float32)  # 2 heads of 8: halves [0..3 | 4..7]
    assert rope_permute(rows, 2)[:8].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_gguf_refuses_what_llama_cpp_would_run_differently(tmp_path):
    _, ckpt = saved_checkpoint(tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["layer_intermediate_size"][2] = 0
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="layer 2 has no MLP channels"):
        write_gguf(ckpt, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_reader_reports_per_layer_geometry(tmp_path):
    _, ckpt = saved_checkpoint(tmp_path)
    layers = CheckpointReader(ckpt).layers()
    assert [layer.num_attention_heads for layer in layers] == [8 - 2 * a for a, _ in QUERY_PLAN]
    assert [layer.intermediate_size for layer in layers] == [256 - 16 * m for _, m in QUERY_PLAN]


needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="the llama.cpp checks need llama-cpp-python (install.sh --test)")


@needs_llama_cpp
@pytest.mark.parametrize("gqa,plan,tie,reconstruct", [("query", QUERY_PLAN, False, "off"), ("group", GROUP_PLAN, True, "off"),
                                                      ("query", QUERY_PLAN, False, "ls")])
def test_pruned_gguf_runs_in_llama_cpp_like_transformers(tmp_path, gqa, plan, tie, reconstruct):
    """Re-fitted checkpoints too: their o_proj / down_proj carry new weights and biases."""
    from deploy.llamacpp_runtime import LlamaCppModel

    pruned, ckpt = saved_checkpoint(tmp_path, gqa, plan, reconstruct, tie=tie)
    if reconstruct == "ls":
        assert pruned.model.layers[1].mlp.down_proj.bias is not None
    summary = write_gguf(ckpt, tmp_path / "m.gguf", "f32")
    assert summary.tokenizer.startswith("no tokenizer")
    ids = tiny_inputs(4, 64, seed=3)
    with torch.no_grad():
        expected = pruned.float()(ids).logits.numpy()
    with LlamaCppModel(tmp_path / "m.gguf", n_ctx=64) as runtime:
        got = np.stack([runtime.logits(row.tolist()) for row in ids])
    assert np.allclose(got, expected, atol=2e-3, rtol=1e-3), np.abs(got - expected).max()


def test_sharded_save_writes_an_index(tmp_path):
    from safetensors.torch import load_file

    from pruning.checkpoint import save_sharded

    state = {k: v.detach() for k, v in tiny_llama().state_dict().items()}
    files = save_sharded(state, tmp_path / "shards", max_shard_bytes=60_000)
    assert len(files) > 2
    index = json.loads((tmp_path / "shards" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    for name, filename in index["weight_map"].items():
        assert torch.equal(load_file(str(tmp_path / "shards" / filename))[name], state[name])


def test_exports_refuse_families_outside_the_llama_layout(tmp_path):
    from tests.tiny import tiny_family_model

    model = tiny_family_model("qwen3")
    context = make_context(model, "query", "wanda-sp", False)
    save_pruned(context.prune(PruningPlan.from_list(QUERY_PLAN)), None, tmp_path / "q3", {})
    with pytest.raises(ExportError, match="model type 'pruned_qwen3'"):
        write_gguf(tmp_path / "q3", tmp_path / "q3.gguf")
    with pytest.raises(ExportError, match="Llama layout"):
        write_decilm(tmp_path / "q3", tmp_path / "q3-deci")


@needs_llama_cpp
@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_llama_layout_families_run_in_llama_cpp(tmp_path, family):
    """Mistral without a sliding window is Llama math; Qwen2 is Llama with q/k/v biases, which
    llama.cpp's deci graph adds (checked here with heads removed, so the biases are cut too)."""
    from deploy.llamacpp_runtime import LlamaCppModel
    from tests.tiny import tiny_family_model

    model = tiny_family_model(family)
    model.config.sliding_window = None  # Mistral v0.3 (Qwen2 has none in use by default)
    context = make_context(model, "query", "wanda-sp", False)
    pruned = context.prune(PruningPlan.from_list(QUERY_PLAN))
    save_pruned(pruned, None, tmp_path / family, {})
    write_gguf(tmp_path / family, tmp_path / "m.gguf", "f32")
    ids = tiny_inputs(2, 32, seed=4)
    with torch.no_grad():
        expected = pruned(ids).logits.numpy()
    with LlamaCppModel(tmp_path / "m.gguf", n_ctx=32) as runtime:
        got = np.stack([runtime.logits(row.tolist()) for row in ids])
    assert np.allclose(got, expected, atol=2e-3, rtol=1e-3)


@needs_llama_cpp
def test_a_gguf_over_the_limit_is_written_as_splits_llama_cpp_loads(tmp_path):
    """Above max_file_bytes (45 GB by default: the hub's per-file limit is 50) the GGUF is llama.cpp
    splits, NAME-0000N-of-0000M.gguf; llama.cpp given the first gives the one file's logits."""
    from deploy.llamacpp_runtime import LlamaCppModel

    _, ckpt = saved_checkpoint(tmp_path)
    whole = write_gguf(ckpt, tmp_path / "whole" / "m.gguf", "f32")
    split = write_gguf(ckpt, tmp_path / "split" / "m.gguf", "f32", max_file_bytes=whole.bytes // 3)
    assert not whole.splits and len(split.splits) >= 3 and split.path == split.splits[0]
    names = sorted(p.name for p in (tmp_path / "split").iterdir())
    assert names == [f"m-{i:05d}-of-{len(names):05d}.gguf" for i in range(1, len(names) + 1)]  # nothing else left
    ids = tiny_inputs(2, 32, seed=4)
    logits = {}
    for key, path in (("whole", whole.path), ("split", split.path)):
        with LlamaCppModel(path, n_ctx=32) as runtime:
            logits[key] = np.stack([runtime.logits(row.tolist()) for row in ids])
    assert np.array_equal(logits["whole"], logits["split"])


@needs_llama_cpp
def test_llama_cpp_speed_is_stated_as_llama_bench_states_it(tmp_path):
    from deploy.llamacpp_runtime import LlamaCppModel

    _, ckpt = saved_checkpoint(tmp_path)
    write_gguf(ckpt, tmp_path / "m.gguf", "f32")
    with LlamaCppModel(tmp_path / "m.gguf", n_ctx=33, logits_all=False) as runtime:
        speed = runtime.bench(tiny_inputs(1, 32, seed=5)[0].tolist(), pp=32, tg=8, repeats=1)
        assert set(speed) == {"pp32", "tg8", "threads"} and speed["pp32"] > 0 and speed["tg8"] > 0
        with pytest.raises(ValueError, match="context of 65"):
            runtime.bench(list(range(64)), pp=64, tg=8)
