"""The modeling code that ships inside every pruned checkpoint (loaded with trust_remote_code)."""
from pruning.hf_modeling.configuration_pruned_llama import PrunedLlamaConfig
from pruning.hf_modeling.modeling_pruned_llama import PrunedLlamaForCausalLM

__all__ = ["PrunedLlamaConfig", "PrunedLlamaForCausalLM"]
