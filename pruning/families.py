"""Decoder families as declared tables: which weights move together when a head or a channel goes.

Removing attention head h of a layer takes rows h*d..(h+1)*d of q (and of k, v for a KV head),
with their biases, and the same columns of o; removing MLP channel c takes row c of gate and
up and column c of down. Per-head norms (q_norm / k_norm in Qwen3 and Gemma-3) are one weight
over head_dim shared by all heads: they stay whole while the heads they apply to change. Fused
projections (Phi-3's qkv_proj, gate_up_proj) hold the parts' rows one after another.

Everything that touches a layer's weights (adapter, surgery, importance, masks, counting, the
pruned config and modeling) reads this table. Adding a family is adding an entry here and its
config/model classes in `pruning/hf_modeling/`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str  # the dense checkpoint's config.model_type
    pruned_type: str  # ours, in hf_modeling/configuration_pruned.py
    config_class: str  # ... and its classes there
    model_class: str
    q: str = "self_attn.q_proj"
    k: str = "self_attn.k_proj"
    v: str = "self_attn.v_proj"
    o: str = "self_attn.o_proj"
    gate: str = "mlp.gate_proj"
    up: str = "mlp.up_proj"
    down: str = "mlp.down_proj"
    qkv: str | None = None  # fused [q | k | v] rows; then q, k, v are parts of it
    gate_up: str | None = None  # fused [gate | up] rows
    layer_norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")  # over hidden
    head_norms: tuple[str, ...] = ()  # over head_dim, shared by the heads
    bos_per_window: bool = False  # evaluation/calibration windows start with BOS (the model breaks without)
    norm_identity: float = 1.0  # the norm weight that scales by 1 (Gemma stores w and scales by 1 + w)

    @property
    def types(self) -> tuple[str, str]:
        return self.model_type, self.pruned_type


FAMILIES: tuple[Family, ...] = (
    Family("llama", "llama", "pruned_llama", "PrunedLlamaConfig", "PrunedLlamaForCausalLM"),
    Family("mistral", "mistral", "pruned_mistral", "PrunedMistralConfig", "PrunedMistralForCausalLM"),
    Family("qwen2", "qwen2", "pruned_qwen2", "PrunedQwen2Config", "PrunedQwen2ForCausalLM"),
    Family("qwen3", "qwen3", "pruned_qwen3", "PrunedQwen3Config", "PrunedQwen3ForCausalLM",
           head_norms=("self_attn.q_norm", "self_attn.k_norm")),
    Family("gemma3", "gemma3_text", "pruned_gemma3_text", "PrunedGemma3TextConfig", "PrunedGemma3ForCausalLM",
           layer_norms=("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                        "post_feedforward_layernorm"),
           head_norms=("self_attn.q_norm", "self_attn.k_norm"), bos_per_window=True, norm_identity=0.0),
    Family("phi3", "phi3", "pruned_phi3", "PrunedPhi3Config", "PrunedPhi3ForCausalLM",
           qkv="self_attn.qkv_proj", gate_up="mlp.gate_up_proj"),
)


class UnsupportedModelError(ValueError):
    pass


def pruned_family(model_type: str | None) -> Family | None:
    """The family whose pruned checkpoints have this model_type (ours), else None."""
    return next((family for family in FAMILIES if family.pruned_type == model_type), None)


def family_of(model_type: str | None) -> Family:
    for family in FAMILIES:
        if model_type in family.types:
            return family
    raise UnsupportedModelError(
        f"model type {model_type!r} is not supported; supported: "
        + ", ".join(f.model_type for f in FAMILIES) + " (and their pruned checkpoints)")
