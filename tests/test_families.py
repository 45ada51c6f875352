"""Every declared family (pruning/families.py) prunes exactly: masks equal surgery, the counted
parameters are the model's, and the saved checkpoint reloads with identical logits."""
import json

import pytest
import torch

from pruning.adapter import DecoderAdapter
from pruning.budget import budget_from_args
from pruning.checkpoint import save_pruned
from pruning.families import FAMILIES, UnsupportedModelError, family_of
from pruning.genome import Genome
from pruning.repair import repair
from tests.test_pruning_equivalence import make_context
from tests.tiny import FAMILY_NAMES, tiny_family_model, tiny_inputs


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("gqa", ["query", "group"])
def test_masked_equals_sliced_and_reload(family, gqa, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_family_model(family)
    dense_params = sum(p.numel() for p in model.parameters())
    assert DecoderAdapter(model).shape().total_params() == dense_params  # counting knows the family's norms
    context = make_context(model, gqa, "flap", True)
    budget = budget_from_args(context.space.shape, None, 0.4, context.space.min_total_params("module"))
    result = repair(Genome("module", (0.3, 0.6, 0.1, 0.5, 0.2, 0.5, 0.4, 0.7)), context.space, budget)
    assert len({p.attn_units_removed for p in result.plan.layers}) > 1
    x = tiny_inputs(2, 24)  # longer than the 8-token sliding windows
    with torch.no_grad():
        with context.masked(result.plan):
            masked = model(x).logits
        pruned = context.prune(result.plan)
        sliced = pruned(x).logits
    assert torch.allclose(masked, sliced, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) == result.total_params
    save_pruned(pruned, None, tmp_path / "ckpt", {"plan": result.plan.to_list()})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == family_of(model.config.model_type).pruned_type
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", trust_remote_code=True, dtype=torch.float32)
    reloaded.config._attn_implementation = "eager"
    with torch.no_grad():
        assert torch.allclose(reloaded(x).logits, sliced, atol=1e-5, rtol=1e-5)


def test_every_family_names_its_classes():
    from pruning.surgery import pruned_classes

    for family in FAMILIES:
        config_class, model_class = pruned_classes(family)
        assert config_class.model_type == family.pruned_type and model_class.config_class is config_class


def test_unsupported_architecture_is_one_line_naming_the_supported():
    with pytest.raises(UnsupportedModelError, match="supported: llama, mistral, qwen2, qwen3, gemma3_text, phi3"):
        family_of("falcon")


@pytest.mark.parametrize("fixture", ["qwen3-32b", "gemma-3-27b", "phi-3-medium"])
def test_config_only_folders_of_every_family_get_the_byte_tokenizer(fixture, tmp_path):
    """--random-weights from a bare config.json: Qwen's and Gemma's tokenizer classes would build an
    empty vocabulary from the config alone (0 tokens of WikiText); the byte tokenizer stands in."""
    import shutil
    from pathlib import Path

    from pruning.loading import load_tokenizer

    shutil.copy(Path(__file__).parent / "fixtures" / fixture / "config.json", tmp_path / "config.json")
    tokenizer = load_tokenizer(str(tmp_path), random_weights=True)
    assert len(tokenizer("héllo", add_special_tokens=False).input_ids) == 6  # one token per UTF-8 byte


@pytest.mark.parametrize("family,identity", [("llama", 1.0), ("gemma3", 0.0)])
def test_random_weights_norms_scale_by_one(family, identity, tmp_path):
    """--random-weights: norms scale by 1, which is weight 1 for Llama and 0 for Gemma (1 + w)."""
    from pruning.loading import byte_tokenizer, load_model

    tiny_family_model(family).config.to_json_file(tmp_path / "config.json")
    model = load_model(str(tmp_path), dtype="float32", device="cpu", random_weights=True,
                       tokenizer=byte_tokenizer()).model  # the tiny vocabulary is too small for bytes
    norms = [p for name, p in model.named_parameters() if name.endswith("norm.weight")]
    assert norms and all(torch.all(p == identity) for p in norms)
