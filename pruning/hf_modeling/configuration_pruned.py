"""Configurations of decoder LMs whose layers have different widths, one per supported family.

Copied verbatim into every pruned checkpoint; `AutoConfig.from_pretrained(dir,
trust_remote_code=True)` reads it. Each keeps its family's fields and global values (so tools
that read `num_attention_heads` or `head_dim` still see the original geometry); the `layer_*`
lists give each decoder layer its real size.
"""
from dataclasses import dataclass

from huggingface_hub.dataclasses import strict
from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config


@dataclass
class PerLayerSizes:
    layer_num_attention_heads: list | None = None
    layer_num_key_value_heads: list | None = None
    layer_intermediate_size: list | None = None
    layer_o_proj_bias: list | None = None  # FLAP bias compensation adds a bias to o_proj
    layer_down_proj_bias: list | None = None  # ... and to down_proj
    qkv_bias: bool = False  # a bias on q/k/v (Llama with attention_bias; Qwen2 always has one)
    gate_up_bias: bool = False

    def layer_geometry(self, layer_idx: int) -> dict:
        """Per-layer sizes, falling back to the dense value when a list is absent."""

        def pick(values, default):
            return default if values is None else values[layer_idx]

        return {
            "num_attention_heads": pick(self.layer_num_attention_heads, self.num_attention_heads),
            "num_key_value_heads": pick(self.layer_num_key_value_heads, self.num_key_value_heads),
            "intermediate_size": pick(self.layer_intermediate_size, self.intermediate_size),
            "o_proj_bias": pick(self.layer_o_proj_bias, False),
            "down_proj_bias": pick(self.layer_down_proj_bias, False),
        }


@strict
class PrunedLlamaConfig(PerLayerSizes, LlamaConfig):
    model_type = "pruned_llama"


@strict
class PrunedMistralConfig(PerLayerSizes, MistralConfig):
    model_type = "pruned_mistral"


@strict
class PrunedQwen2Config(PerLayerSizes, Qwen2Config):
    model_type = "pruned_qwen2"


@strict
class PrunedQwen3Config(PerLayerSizes, Qwen3Config):
    model_type = "pruned_qwen3"


@strict
class PrunedGemma3TextConfig(PerLayerSizes, Gemma3TextConfig):
    model_type = "pruned_gemma3_text"


@strict
class PrunedPhi3Config(PerLayerSizes, Phi3Config):
    model_type = "pruned_phi3"


__all__ = ["PrunedLlamaConfig", "PrunedMistralConfig", "PrunedQwen2Config", "PrunedQwen3Config",
           "PrunedGemma3TextConfig", "PrunedPhi3Config"]
