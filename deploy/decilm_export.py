"""A DeciLM / nemotron-nas checkpoint (vLLM's `DeciLMForCausalLM`) of any pruned plan.

That format fixes the number of query heads for the whole model: each block only says how many
query heads share a KV head (`n_heads_in_group`), so a layer has
`num_attention_heads // n_heads_in_group` KV heads. Our layers have fewer query heads (query
mode) or fewer KV groups (group mode), so each layer is padded back, exactly:
* every KV group gets `num_attention_heads // kv` query heads, the missing ones as zero rows of
  q_proj and zero columns of o_proj: a zero query attends uniformly, and its output is
  multiplied by zero columns, so it adds exactly nothing;
* where the layer's KV count does not divide the query-head count, zero KV heads (zero rows of
  k/v) are added up to the next divisor, with all-zero query heads.
The cost: attention runs at the dense query-head count in every layer (its matmuls and the
attention itself), and the q/o weights are stored at dense size. MLP widths are exact
(`ffn.intermediate_size`, which vLLM uses when a block has no `ffn_mult`).

Streamed like the GGUF export: one layer's tensors in memory at a time, 5 GB shards.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from deploy.checkpoint_reader import CheckpointReader, ExportError

FILES = Path(__file__).parent / "decilm_files"
CONFIG_FILE = "configuration_decilm.py"


@dataclass(frozen=True)
class PaddedLayer:
    heads: int  # real query heads
    kv: int  # real KV heads
    padded_kv: int  # KV heads after padding (divides the model's query-head count)
    group: int  # query heads per KV head after padding (n_heads_in_group)

    @property
    def head_map(self) -> list[int | None]:
        """For each padded query head, the real head it holds (None: a zero head)."""
        per = self.heads // self.kv
        return [g * per + j if g < self.kv and j < per else None
                for g in range(self.padded_kv) for j in range(self.group)]

    @property
    def kv_map(self) -> list[int | None]:
        return [g if g < self.kv else None for g in range(self.padded_kv)]

    @property
    def padded_heads(self) -> int:
        return self.padded_kv * self.group


def pad_layer(heads: int, kv: int, model_heads: int) -> PaddedLayer:
    if kv <= 0 or heads <= 0 or heads % kv:
        raise ExportError(f"a layer with {heads} query heads over {kv} KV heads cannot be padded")
    padded_kv = next(d for d in range(kv, model_heads + 1) if model_heads % d == 0)
    group = model_heads // padded_kv
    if group < heads // kv:
        raise ExportError(f"a layer with {heads // kv} query heads per group exceeds the model's {group}")
    return PaddedLayer(heads, kv, padded_kv, group)


def _pick_rows(tensor: torch.Tensor, mapping: list[int | None], head_dim: int) -> torch.Tensor:
    """Rows (dim 0) head by head per `mapping`; None heads are zeros."""
    out = torch.zeros((len(mapping) * head_dim, *tensor.shape[1:]), dtype=tensor.dtype)
    for k, source in enumerate(mapping):
        if source is not None:
            out[k * head_dim:(k + 1) * head_dim] = tensor[source * head_dim:(source + 1) * head_dim]
    return out


def _pick_columns(tensor: torch.Tensor, mapping: list[int | None], head_dim: int) -> torch.Tensor:
    return _pick_rows(tensor.t(), mapping, head_dim).t().contiguous()


def plan_padding(reader: CheckpointReader) -> list[PaddedLayer]:
    model_heads = int(reader.config["num_attention_heads"])
    return [pad_layer(layer.num_attention_heads, layer.num_key_value_heads, model_heads) for layer in reader.layers()]


def decilm_config(reader: CheckpointReader, padded: list[PaddedLayer]) -> dict:
    c = reader.config
    layers = reader.layers()
    has = reader.has
    o_bias = any(has(f"model.layers.{i}.self_attn.o_proj.bias") for i in range(reader.num_layers))
    qkv_bias = any(has(f"model.layers.{i}.self_attn.q_proj.bias") for i in range(reader.num_layers))
    down_bias = any(has(f"model.layers.{i}.mlp.down_proj.bias") for i in range(reader.num_layers))
    gate_bias = any(has(f"model.layers.{i}.mlp.gate_proj.bias") for i in range(reader.num_layers))
    blocks = [{
        "attention": {"no_op": False, "replace_with_linear": False, "n_heads_in_group": p.group},
        "ffn": {"no_op": False, "replace_with_linear": False, "intermediate_size": layer.intermediate_size},
    } for p, layer in zip(padded, layers)]
    keep = ("hidden_size", "vocab_size", "hidden_act", "rms_norm_eps", "max_position_embeddings", "rope_parameters",
            "rope_theta", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range")
    config = {k: c[k] for k in keep if k in c}
    config.update({
        "architectures": ["DeciLMForCausalLM"],
        "model_type": "nemotron-nas",
        "auto_map": {"AutoConfig": "configuration_decilm.DeciLMConfig"},
        "num_hidden_layers": reader.num_layers,
        "num_attention_heads": int(c["num_attention_heads"]),
        "num_key_value_heads": padded[0].padded_kv,  # vLLM's KV-cache sizing reads the first block
        "head_dim": reader.head_dim,
        "intermediate_size": max(layer.intermediate_size for layer in layers),
        "tie_word_embeddings": reader.tied,
        # vLLM: attention_bias puts a bias on q/k/v *and* o; qkv_bias then decides q/k/v alone.
        "attention_bias": o_bias or qkv_bias,
        "qkv_bias": qkv_bias,
        "mlp_bias": down_bias or gate_bias,
        "block_configs": blocks,
        "dtype": str(reader.dtype()).replace("torch.", ""),
    })
    return config


def _layer_tensors(reader: CheckpointReader, i: int, p: PaddedLayer, config: dict) -> dict[str, torch.Tensor]:
    d = reader.head_dim
    prefix = f"model.layers.{i}."
    out: dict[str, torch.Tensor] = {}
    for name in reader.names():
        if not name.startswith(prefix):
            continue
        local = name[len(prefix):]
        tensor = reader.tensor(name)
        if local.startswith("self_attn.q_proj."):
            tensor = _pick_rows(tensor, p.head_map, d)
        elif local.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
            tensor = _pick_rows(tensor, p.kv_map, d)
        elif local == "self_attn.o_proj.weight":
            tensor = _pick_columns(tensor, p.head_map, d)
        out[name] = tensor
    dtype = out[prefix + "self_attn.o_proj.weight"].dtype
    shapes = _layer_shapes(reader, i, p, config)
    for local in _needed_biases(config):
        out.setdefault(prefix + local, torch.zeros(shapes[prefix + local], dtype=dtype))
    return out


def _layer_shapes(reader: CheckpointReader, i: int, p: PaddedLayer, config: dict) -> dict[str, tuple[int, ...]]:
    """The padded layer's tensor shapes, without reading any weight."""
    d, hidden = reader.head_dim, reader.hidden_size
    prefix = f"model.layers.{i}."
    q, kv = p.padded_heads * d, p.padded_kv * d
    width = config["block_configs"][i]["ffn"]["intermediate_size"]
    padded_shapes = {"self_attn.q_proj.weight": (q, hidden), "self_attn.q_proj.bias": (q,),
                     "self_attn.k_proj.weight": (kv, hidden), "self_attn.k_proj.bias": (kv,),
                     "self_attn.v_proj.weight": (kv, hidden), "self_attn.v_proj.bias": (kv,),
                     "self_attn.o_proj.weight": (hidden, q), "self_attn.o_proj.bias": (hidden,),
                     "mlp.gate_proj.bias": (width,), "mlp.up_proj.bias": (width,), "mlp.down_proj.bias": (hidden,)}
    shapes = {n: reader.shape(n) for n in reader.names() if n.startswith(prefix)}
    for local in _needed_biases(config):
        shapes.setdefault(prefix + local, ())
    return {n: padded_shapes.get(n[len(prefix):], shape) for n, shape in shapes.items()}


def _needed_biases(config: dict) -> list[str]:
    """The format's bias flags are global: layers without a bias get zeros (they add nothing)."""
    needed = []
    if config["attention_bias"]:
        needed.append("self_attn.o_proj.bias")
    if config["qkv_bias"]:
        needed += ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]
    if config["mlp_bias"]:
        needed += ["mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias"]
    return needed


def padding_cost(padded: list[PaddedLayer]) -> dict:
    real = sum(p.heads for p in padded)
    stored = sum(p.padded_heads for p in padded)
    return {"query_heads_real": real, "query_heads_stored": stored,
            "kv_heads_real": sum(p.kv for p in padded), "kv_heads_stored": sum(p.padded_kv for p in padded)}


def write_decilm(model_dir: str | Path, out_dir: str | Path, max_shard_bytes: int = 5 * 10**9) -> dict:
    """The DeciLM folder, written aside and moved into place whole (pruning.checkpoint.written_aside);
    a truncated input shard is refused first, naming it."""
    from pruning.checkpoint import check_safetensors, written_aside

    check_safetensors(model_dir)
    with written_aside(out_dir) as partial:
        cost = _write_decilm_into(model_dir, partial, max_shard_bytes)
        card = Path(model_dir) / "README.md"
        if card.exists():  # the checkpoint's model card, with what this folder is
            (partial / "README.md").write_text(card.read_text() + (
                "\n## This folder\n\nThe DeciLM (`nemotron-nas`) export of that checkpoint for vLLM: "
                "`vllm serve THIS_FOLDER --trust-remote-code`. Removed query heads are stored as exact zeros "
                f"({cost['query_heads_stored']} stored for {cost['query_heads_real']} real; `decilm_padding.json`).\n"))
        return cost


def _write_decilm_into(model_dir: str | Path, out_dir: str | Path, max_shard_bytes: int = 5 * 10**9) -> dict:
    """Write the DeciLM folder; returns the padding cost (real vs stored heads)."""
    from pruning.checkpoint import save_sharded

    reader = CheckpointReader(model_dir)
    layout = reader.llama_layout_problem()
    if layout:
        raise ExportError(f"cannot export to DeciLM: {layout}")
    padded = plan_padding(reader)
    config = decilm_config(reader, padded)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Every tensor is announced as a meta tensor of its final shape (shards are planned from
    # sizes); save_sharded asks `resolve` for the data shard by shard, and a layer is built once.
    dtype = reader.dtype()
    shapes: dict[str, tuple[int, ...]] = {n: reader.shape(n) for n in reader.names() if not n.startswith("model.layers.")}
    if reader.tied:
        shapes.pop("lm_head.weight", None)
    for i, p in enumerate(padded):
        shapes.update(_layer_shapes(reader, i, p, config))
    tensors = {n: torch.empty(shape, dtype=dtype, device="meta") for n, shape in shapes.items()}
    built: dict[int, dict[str, torch.Tensor]] = {}

    def resolve(name: str) -> torch.Tensor:
        if not name.startswith("model.layers."):
            return reader.tensor(name)
        i = int(name.split(".")[2])
        if i not in built:
            built.clear()
            built[i] = _layer_tensors(reader, i, padded[i], config)
        return built[i][name]

    save_sharded(tensors, out, max_shard_bytes=max_shard_bytes, resolve=resolve)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copyfile(FILES / CONFIG_FILE, out / CONFIG_FILE)
    for extra in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                  "generation_config.json", "chat_template.jinja", "pruning.json"):
        if (reader.directory / extra).is_file():
            shutil.copyfile(reader.directory / extra, out / extra)
    cost = padding_cost(padded)
    (out / "decilm_padding.json").write_text(json.dumps(cost, indent=2))
    return cost
