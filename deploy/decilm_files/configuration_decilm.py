"""Configuration of a DeciLM / nemotron-nas checkpoint written by Self-Pruner.

Copied into every DeciLM export and named in its `auto_map`, so that
`AutoConfig.from_pretrained(dir, trust_remote_code=True)` (what vLLM calls) works without
NVIDIA's remote code. vLLM reads the blocks as attributes (`block.attention.n_heads_in_group`,
`block.ffn.intermediate_size`, and `hasattr(block.ffn, "ffn_mult")` to choose how to size the
MLP), so each block is a dict that also answers attribute access; it still saves as JSON.
"""
from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig


class Section(dict):
    """A dict whose keys read as attributes; a missing key is an AttributeError (so hasattr works)."""

    def __getattr__(self, key):
        try:
            value = self[key]
        except KeyError:
            raise AttributeError(key) from None
        return Section(value) if isinstance(value, dict) else value


@strict
class DeciLMConfig(LlamaConfig):
    model_type = "nemotron-nas"

    block_configs: list | None = None

    def __post_init__(self, **kwargs):
        if self.block_configs is not None:
            self.block_configs = [Section(block) for block in self.block_configs]
        super().__post_init__(**kwargs)


__all__ = ["DeciLMConfig"]
