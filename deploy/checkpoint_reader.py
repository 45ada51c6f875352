"""A saved checkpoint read lazily: its config, its per-layer geometry and one tensor at a time.

Exports stream a model of any size: tensor names and shapes come from the safetensors headers,
and each tensor is read from disk only when it is written out, so RAM stays near one tensor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


class ExportError(ValueError):
    """A checkpoint that cannot be exported as asked: the message says why and what to do."""


@dataclass(frozen=True)
class LayerGeometry:
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int


class CheckpointReader:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        config_file = self.directory / "config.json"
        if not config_file.is_file():
            raise ExportError(f"{directory} holds no config.json: give a checkpoint folder (from prune or a search run)")
        self.config: dict = json.loads(config_file.read_text())
        self._files = self._tensor_files()
        self._names: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, str] = {}
        from safetensors import safe_open

        for file in self._files:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    piece = handle.get_slice(name)
                    self._names[name] = file
                    self._shapes[name] = tuple(piece.get_shape())
                    self._dtypes[name] = piece.get_dtype()

    def _tensor_files(self) -> list[Path]:
        index = self.directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return sorted({self.directory / name for name in weight_map.values()})
        single = self.directory / "model.safetensors"
        if single.is_file():
            return [single]
        raise ExportError(f"{self.directory} holds no safetensors weights (model.safetensors or an index)")

    # -- the model ------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.hidden_size // self.config["num_attention_heads"])

    @property
    def tied(self) -> bool:
        return "lm_head.weight" not in self._names or bool(self.config.get("tie_word_embeddings", False))

    def layers(self) -> list[LayerGeometry]:
        """Per-layer sizes: the pruned config's lists, else the dense config's values."""
        c = self.config
        n = self.num_layers

        def per_layer(key: str, dense_key: str) -> list[int]:
            values = c.get(key)
            return list(values) if values is not None else [int(c[dense_key])] * n

        heads = per_layer("layer_num_attention_heads", "num_attention_heads")
        kv = per_layer("layer_num_key_value_heads", "num_key_value_heads") if (
            c.get("layer_num_key_value_heads") is not None or c.get("num_key_value_heads") is not None) else heads
        ffn = per_layer("layer_intermediate_size", "intermediate_size")
        return [LayerGeometry(h, k, f) for h, k, f in zip(heads, kv, ffn)]

    def dtype(self) -> torch.dtype:
        kinds = {self._dtypes[name] for name in self._names if name.endswith("proj.weight")}
        return torch.bfloat16 if kinds == {"BF16"} else torch.float16 if kinds == {"F16"} else torch.float32

    # -- tensors --------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._names)

    def has(self, name: str) -> bool:
        return name in self._names

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def tensor(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._names[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    @property
    def family(self):
        from pruning.families import family_of

        return family_of(self.config.get("model_type"))

    def llama_layout_problem(self) -> str | None:
        """Why this checkpoint is not plain Llama math (what llama.cpp's deci and vLLM's DeciLM
        run), or None. Mistral without a sliding window is Llama, and Qwen2 is Llama with q/k/v
        biases (which both graphs take). Qwen3 and Gemma-3 have q/k norms those graphs lack, and
        llama.cpp's own qwen3 and gemma3 graphs size every layer by layer 0 (a file with per-layer
        widths fails to load: checked); Phi-3's 2047-token sliding window has no counterpart there."""
        model_type = self.config.get("model_type")
        window = self.config.get("sliding_window")
        if model_type in ("qwen2", "pruned_qwen2"):
            window = window if self.config.get("use_sliding_window") else None
        if model_type in ("mistral", "pruned_mistral", "qwen2", "pruned_qwen2") and window is not None:
            return f"a sliding window ({window} tokens), which that graph does not apply"
        if model_type not in ("llama", "pruned_llama", "mistral", "pruned_mistral", "qwen2", "pruned_qwen2"):
            return (f"model type {model_type!r}: these exports cover the Llama layout (Llama, Qwen2/2.5, and Mistral "
                    "without a sliding window); serve other families from the checkpoint with transformers")
        family = self.family  # the exports write Llama's names, which these families' tables use too
        if (family.q, family.k, family.v, family.o, family.gate, family.up, family.down, family.qkv, family.gate_up) != (
                "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj", None, None) or len(family.layer_norms) != 2 or family.head_norms:
            return f"the {family.name} table does not name its weights as Llama does"
        return None

    def record(self) -> dict:
        path = self.directory / "pruning.json"
        return json.loads(path.read_text()) if path.is_file() else {}
