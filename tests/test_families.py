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
@pytest.mark.parametrize("gqa,reconstruct", [("query", "bias"), ("group", "bias"), ("query", "ls")])
def test_masked_equals_sliced_and_reload(family, gqa, reconstruct, tmp_path):
    """ls: the layer stream calls each family's layers as its model does (Gemma-3's per-layer-type
    masks and rotary embeddings, Phi-3's fused projections) and the refits survive the reload."""
    from transformers import AutoModelForCausalLM

    model = tiny_family_model(family)
    dense_params = sum(p.numel() for p in model.parameters())
    assert DecoderAdapter(model).shape().total_params() == dense_params  # counting knows the family's norms
    context = make_context(model, gqa, "flap", reconstruct)
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


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_layer_stream_calls_every_layer_as_the_model_does(family):
    """Reconstruction streams windows one layer at a time: each layer's output must be what the
    model's own forward gives (Gemma-3's sliding and full layers get their own masks and rotary
    embeddings; windows longer than the sliding window)."""
    from pruning.data import TokenWindows
    from pruning.layer_stream import LayerStream

    model = tiny_family_model(family)
    x = tiny_inputs(3, 24)
    expected = []
    handles = [layer.register_forward_hook(lambda _m, _a, out: expected.append(out[0] if isinstance(out, tuple) else out))
               for layer in model.model.layers]
    with torch.no_grad():
        model.model(input_ids=x, use_cache=False)
    for handle in handles:
        handle.remove()
    stream = LayerStream(model, TokenWindows(x, "random", "calib"), batch_size=2)  # two batches of different sizes
    for i in range(len(model.model.layers)):
        stream.run(i, advance=True)
        got = torch.cat(stream.hidden)
        assert torch.allclose(got, expected[i], atol=1e-5, rtol=1e-5), (family, i)
