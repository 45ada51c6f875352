"""LLaMA with per-layer head counts and MLP widths, built on transformers' Llama modules.

Copied verbatim into every pruned checkpoint. Only the constructors differ from
`modeling_llama`: each layer is built at its own size; the forward passes are transformers' own
(attention reshapes with `-1` heads and repeats KV by `num_key_value_groups`, so smaller layers
run unchanged, GQA included).
"""
import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)

from .configuration_pruned_llama import PrunedLlamaConfig


class PrunedLlamaAttention(LlamaAttention):
    def __init__(self, config: PrunedLlamaConfig, layer_idx: int):
        nn.Module.__init__(self)
        geometry = config.layer_geometry(layer_idx)
        n_heads, n_kv = geometry["num_attention_heads"], geometry["num_key_value_heads"]
        hidden = config.hidden_size
        self.config = config  # forward reads config._attn_implementation
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = n_heads // n_kv
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.q_proj = nn.Linear(hidden, n_heads * self.head_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(hidden, n_kv * self.head_dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(hidden, n_kv * self.head_dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, hidden, bias=geometry["o_proj_bias"])


class PrunedLlamaMLP(LlamaMLP):
    def __init__(self, config: PrunedLlamaConfig, layer_idx: int):
        nn.Module.__init__(self)
        geometry = config.layer_geometry(layer_idx)
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = geometry["intermediate_size"]
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.gate_up_bias)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.gate_up_bias)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=geometry["down_proj_bias"])
        self.act_fn = ACT2FN[config.hidden_act]


class PrunedLlamaDecoderLayer(LlamaDecoderLayer):
    def __init__(self, config: PrunedLlamaConfig, layer_idx: int):
        nn.Module.__init__(self)
        self.hidden_size = config.hidden_size
        self.self_attn = PrunedLlamaAttention(config, layer_idx)
        self.mlp = PrunedLlamaMLP(config, layer_idx)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class PrunedLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = PrunedLlamaConfig
    config: PrunedLlamaConfig
    _no_split_modules = ["PrunedLlamaDecoderLayer"]
    _can_record_outputs = {
        "hidden_states": PrunedLlamaDecoderLayer,
        "attentions": PrunedLlamaAttention,
    }


class PrunedLlamaModel(PrunedLlamaPreTrainedModel, LlamaModel):
    def __init__(self, config: PrunedLlamaConfig):
        PrunedLlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [PrunedLlamaDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class PrunedLlamaForCausalLM(PrunedLlamaPreTrainedModel, LlamaForCausalLM):
    def __init__(self, config: PrunedLlamaConfig):
        PrunedLlamaPreTrainedModel.__init__(self, config)
        self.model = PrunedLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


__all__ = ["PrunedLlamaForCausalLM", "PrunedLlamaModel", "PrunedLlamaPreTrainedModel"]
