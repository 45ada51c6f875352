"""Configuration of a LLaMA-family model whose decoder layers have different widths.

Copied verbatim into every pruned checkpoint; `AutoConfig.from_pretrained(dir,
trust_remote_code=True)` reads it. The global fields keep the dense model's values (so tools
that read `num_attention_heads` or `head_dim` still see the original geometry); the `layer_*`
lists give each decoder layer its real size.
"""
from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig


@strict
class PrunedLlamaConfig(LlamaConfig):
    model_type = "pruned_llama"

    layer_num_attention_heads: list | None = None
    layer_num_key_value_heads: list | None = None
    layer_intermediate_size: list | None = None
    layer_o_proj_bias: list | None = None  # FLAP bias compensation adds a bias to o_proj
    layer_down_proj_bias: list | None = None  # ... and to down_proj
    qkv_bias: bool = False  # Qwen2 keeps biases on q/k/v
    gate_up_bias: bool = False

    def layer_geometry(self, layer_idx: int) -> dict:
        """Per-layer sizes, falling back to the dense value when a list is absent."""

        def pick(values, default):
            return default if values is None else values[layer_idx]

        return {
            "num_attention_heads": pick(self.layer_num_attention_heads, self.num_attention_heads),
            "num_key_value_heads": pick(self.layer_num_key_value_heads, self.num_key_value_heads),
            "intermediate_size": pick(self.layer_intermediate_size, self.intermediate_size),
            "o_proj_bias": pick(self.layer_o_proj_bias, self.attention_bias),
            "down_proj_bias": pick(self.layer_down_proj_bias, self.mlp_bias),
        }


__all__ = ["PrunedLlamaConfig"]
