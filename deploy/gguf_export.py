"""A llama.cpp GGUF of a (pruned) Llama checkpoint, in llama.cpp's `deci` architecture.

`deci` (Nemotron-NAS) is the llama.cpp architecture whose head counts and FFN widths are
per-layer arrays, which is exactly our plans' shape: every layer keeps at least one KV group, at
least one query head per group and at least one MLP unit (pruning/space.py), and query-mode
pruning removes one query head from every group at once, so a layer's groups stay equal as
llama.cpp's GQA needs. What llama.cpp cannot express is refused with the reason.

Facts the layout rests on (read in llama.cpp's src/llama-model.cpp, src/models/deci.cpp and its
converter's DeciModel):
* key/value length and rope dimension are written always: otherwise llama.cpp derives the head
  size from layer 0 (hidden / heads), wrong once layer 0 lost heads;
* Q and K rows are permuted per head from Hugging Face's rotate-half layout into llama.cpp's
  interleaved rope pairs (the Llama converter's permutation, done per layer with its own counts);
* 1-D tensors (norms, biases) stay float32, as llama.cpp's converter writes them.

Tensors are streamed: infos first (shapes from the safetensors headers), then one tensor at a
time, so a 70B export needs about one tensor of RAM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from deploy.checkpoint_reader import CheckpointReader, ExportError
from deploy.gguf_tokenizer import write_tokenizer
from pruning.checkpoint import aside_folder
from pruning.families import Family

ARCH = "deci"
BASE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16}

_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}


def layer_names(family: Family) -> dict[str, str]:
    """The family's module names (its table in pruning/families.py) -> llama.cpp's, inside a layer."""
    names = {family.q: "attn_q", family.k: "attn_k", family.v: "attn_v", family.o: "attn_output",
             family.gate: "ffn_gate", family.up: "ffn_up", family.down: "ffn_down"}
    return names | dict(zip(family.layer_norms, ("attn_norm", "ffn_norm")))


@dataclass(frozen=True)
class GGUFSummary:
    path: Path  # the file, or the first of its splits (what llama.cpp is given: it finds the others)
    tensors: int
    bytes: int
    tokenizer: str
    notes: tuple[str, ...] = ()
    splits: tuple[Path, ...] = ()  # every file, when split (`-0000N-of-0000M.gguf`)


# The hub refuses files over 50 GB: a GGUF larger than this is written as llama.cpp splits
# (NAME-00001-of-0000M.gguf ...; llama.cpp loads them given the first), e.g. a 70B f16 (~140 GB).
SPLIT_BYTES = 45 * 10**9


def gguf_name(hf_name: str, family: Family) -> str | None:
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    if hf_name.startswith("model.layers."):
        rest = hf_name[len("model.layers."):]
        index, _, inner = rest.partition(".")
        module, _, kind = inner.rpartition(".")
        names = layer_names(family)
        if module in names:
            return f"blk.{index}.{names[module]}.{kind}"
    return None


def rope_permute(tensor: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Hugging Face's rotate-half rows -> llama.cpp's interleaved pairs, per head. Works for a
    weight (rows x in) and a bias (rows)."""
    rows = tensor.shape[0]
    head_dim = rows // n_heads
    rest = tensor.shape[1:]
    return tensor.reshape(n_heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def check_expressible(reader: CheckpointReader) -> None:
    """Refuse what llama.cpp's deci graph would run differently from transformers."""
    problems = []
    for i, layer in enumerate(reader.layers()):
        if layer.num_attention_heads <= 0 or layer.num_key_value_heads <= 0:
            problems.append(f"layer {i} has no attention heads (llama.cpp reads that as a linear or no-op block)")
        elif layer.num_attention_heads % layer.num_key_value_heads:
            problems.append(f"layer {i}: {layer.num_attention_heads} query heads do not split evenly over "
                            f"{layer.num_key_value_heads} KV heads")
        if layer.intermediate_size <= 0:
            problems.append(f"layer {i} has no MLP channels (llama.cpp's deci graph then drops the attention output too)")
    scaling = _rope_scaling(reader.config)
    if scaling and scaling.get("rope_type", scaling.get("type")) not in ("default", "llama3", "linear", None):
        problems.append(f"rope scaling {scaling.get('rope_type', scaling.get('type'))!r} is not exported")
    layout = reader.llama_layout_problem()
    if layout:
        problems.insert(0, layout)
    if problems:
        raise ExportError("cannot export to GGUF: " + "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))


def _rope_scaling(config: dict) -> dict | None:
    params = config.get("rope_parameters") or config.get("rope_scaling")
    if params and params.get("rope_type", params.get("type")) not in (None, "default"):
        return params
    return None


def _rope_theta(config: dict) -> float:
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def llama3_rope_factors(config: dict, head_dim: int) -> np.ndarray:
    """Llama 3.1's frequency-dependent rope scaling as the per-frequency divisors llama.cpp
    reads from `rope_freqs.weight`: high frequencies unchanged, low ones divided by `factor`,
    a smooth blend between."""
    s = _rope_scaling(config)
    base, factor = _rope_theta(config), float(s["factor"])
    low, high = float(s.get("low_freq_factor", 1.0)), float(s.get("high_freq_factor", 4.0))
    old_context = float(s.get("original_max_position_embeddings", 8192))
    factors = []
    for k in range(0, head_dim, 2):
        wavelength = 2 * math.pi * base ** (k / head_dim)
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _write_metadata(writer: gguf.GGUFWriter, reader: CheckpointReader, base_type: str, name: str) -> str:
    c = reader.config
    layers = reader.layers()
    writer.add_name(name)
    writer.add_context_length(int(c.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(reader.hidden_size)
    writer.add_block_count(reader.num_layers)
    writer.add_feed_forward_length([layer.intermediate_size for layer in layers])
    writer.add_head_count([layer.num_attention_heads for layer in layers])
    writer.add_head_count_kv([layer.num_key_value_heads for layer in layers])
    writer.add_key_length(reader.head_dim)
    writer.add_value_length(reader.head_dim)
    writer.add_rope_dimension_count(reader.head_dim)
    writer.add_rope_freq_base(_rope_theta(c))
    writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(int(c["vocab_size"]))
    writer.add_file_type(BASE_TYPES[base_type])
    scaling = _rope_scaling(c)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    return write_tokenizer(writer, reader.directory, reader.record(), int(c["vocab_size"]))


def _plan_tensors(reader: CheckpointReader) -> list[tuple[str, str]]:
    """(hf name, gguf name) in the order they are written: globals, then layer by layer."""
    pairs = []
    for hf in reader.names():
        name = gguf_name(hf, reader.family)
        if name is None:
            raise ExportError(f"tensor {hf} has no place in a llama.cpp deci model")
        if hf == "lm_head.weight" and reader.tied:
            continue
        pairs.append((hf, name))
    return sorted(pairs, key=lambda p: (p[1].startswith("blk."), _layer_index(p[1]), p[1]))


def _layer_index(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def _convert(reader: CheckpointReader, hf: str, base_type: str) -> np.ndarray:
    """The tensor as llama.cpp stores it: permuted for rope, float32 if 1-D, else the base type
    (bf16 as raw bytes)."""
    tensor = reader.tensor(hf)
    module = hf.split(".", 3)[-1].rpartition(".")[0] if hf.startswith("model.layers.") else ""
    if module in (reader.family.q, reader.family.k):
        layer = reader.layers()[int(hf.split(".")[2])]
        heads = layer.num_attention_heads if module == reader.family.q else layer.num_key_value_heads
        tensor = rope_permute(tensor, heads)
    if tensor.dim() == 1 or base_type == "f32":
        return tensor.to(torch.float32).contiguous().numpy()
    if base_type == "f16":
        return tensor.to(torch.float16).contiguous().numpy()
    return tensor.to(torch.bfloat16).contiguous().view(torch.uint8).numpy()


def _tensor_info(reader: CheckpointReader, hf: str, base_type: str) -> tuple[tuple[int, ...], np.dtype, int, gguf.GGMLQuantizationType | None]:
    shape = reader.shape(hf)
    count = math.prod(shape)
    if len(shape) == 1 or base_type == "f32":
        return shape, np.dtype(np.float32), 4 * count, None
    if base_type == "f16":
        return shape, np.dtype(np.float16), 2 * count, None
    return (*shape[:-1], 2 * shape[-1]), np.dtype(np.uint8), 2 * count, gguf.GGMLQuantizationType.BF16


def write_gguf(model_dir: str | Path, out: str | Path, base_type: str = "f16", name: str | None = None,
               progress=None, max_file_bytes: int = SPLIT_BYTES) -> GGUFSummary:
    """Write `out` from the checkpoint folder `model_dir`; `base_type` f16, bf16 or f32. Above
    `max_file_bytes` of tensors, llama.cpp splits beside `out` instead (`OUT-00001-of-0000M.gguf`, ...).
    Everything is written in a hidden folder beside `out` and moved into place when complete."""
    if base_type not in BASE_TYPES:
        raise ExportError(f"GGUF base type must be one of {', '.join(BASE_TYPES)}, not {base_type!r}")
    reader = CheckpointReader(model_dir)
    check_expressible(reader)
    out = Path(out)
    with aside_folder(out.parent, out.name) as aside:  # removed on any error: nothing half-written is left
        tmp = aside / out.name
        writer = gguf.GGUFWriter(str(tmp), ARCH, split_max_size=max_file_bytes)
        tokenizer = _write_metadata(writer, reader, base_type, name or reader.directory.name)
        pairs = _plan_tensors(reader)
        factors = llama3_rope_factors(reader.config, reader.head_dim) if (
            (_rope_scaling(reader.config) or {}).get("rope_type") == "llama3") else None
        if factors is not None:
            writer.add_tensor_info("rope_freqs.weight", factors.shape, factors.dtype, factors.nbytes)
        total = 0
        for hf, name in pairs:
            shape, dtype, nbytes, raw = _tensor_info(reader, hf, base_type)
            writer.add_tensor_info(name, shape, dtype, nbytes, raw_dtype=raw)
            total += nbytes
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        if factors is not None:
            writer.write_tensor_data(factors)
        for k, (hf, _) in enumerate(pairs):
            writer.write_tensor_data(_convert(reader, hf, base_type))
            if progress:
                progress(k + 1, len(pairs))
        writer.close()
    # a killed export never leaves a file that looks whole: the files appear only now
    written = sorted(aside.iterdir())
    for old in [out, *out.parent.glob(f"{out.stem}-0*-of-0*.gguf")]:  # an earlier export under this name
        old.unlink(missing_ok=True)
    for path in written:
        path.replace(out.parent / path.name)
    aside.rmdir()
    splits = tuple(out.parent / p.name for p in written) if len(written) > 1 else ()
    out = splits[0] if splits else out
    notes = []
    if reader.hidden_size % 256 or any(layer.intermediate_size % 256 for layer in reader.layers()):
        notes.append("some row lengths are not multiples of 256: k-quants (q4_k_m) fall back to other types there")
    return GGUFSummary(out, len(pairs) + (factors is not None), total, tokenizer, tuple(notes), splits)
