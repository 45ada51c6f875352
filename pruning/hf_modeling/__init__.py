"""The modeling code that ships inside every pruned checkpoint (loaded with trust_remote_code)."""
from pruning.hf_modeling.configuration_pruned import (
    PrunedGemma3TextConfig,
    PrunedLlamaConfig,
    PrunedMistralConfig,
    PrunedPhi3Config,
    PrunedQwen2Config,
    PrunedQwen3Config,
)
from pruning.hf_modeling.modeling_pruned import (
    PrunedGemma3ForCausalLM,
    PrunedLlamaForCausalLM,
    PrunedMistralForCausalLM,
    PrunedPhi3ForCausalLM,
    PrunedQwen2ForCausalLM,
    PrunedQwen3ForCausalLM,
)

PRUNED_CONFIGS = (PrunedLlamaConfig, PrunedMistralConfig, PrunedQwen2Config, PrunedQwen3Config,
                  PrunedGemma3TextConfig, PrunedPhi3Config)

__all__ = ["PRUNED_CONFIGS", "PrunedLlamaConfig", "PrunedLlamaForCausalLM", "PrunedMistralConfig",
           "PrunedMistralForCausalLM", "PrunedQwen2Config", "PrunedQwen2ForCausalLM", "PrunedQwen3Config",
           "PrunedQwen3ForCausalLM", "PrunedGemma3TextConfig", "PrunedGemma3ForCausalLM", "PrunedPhi3Config",
           "PrunedPhi3ForCausalLM"]
