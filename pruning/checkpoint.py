"""Save a physically pruned model so that ordinary tools can load it.

The directory holds safetensors weights (5 GB shards with `model.safetensors.index.json` beyond
that), a config with per-layer sizes and an `auto_map`, the
two modeling files (so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`
works anywhere transformers is installed), the tokenizer, and `pruning.json` (genome, plan,
budget, metric, source model): how the model was made.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

MODELING_DIR = Path(__file__).parent / "hf_modeling"
MODELING_FILES = ("configuration_pruned.py", "modeling_pruned.py")
RECORD_FILE = "pruning.json"
MAX_SHARD_SIZE = "5GB"  # shards of at most this much; CPU RAM while saving stays near one shard


def save_pruned(model, tokenizer, out_dir: str | Path, record: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # transformers writes shards one at a time and reads offloaded weights back per shard.
    with warnings.catch_warnings():  # its offload warning quotes the 50GB default; our shards are 5 GB
        warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
        model.save_pretrained(out, max_shard_size=MAX_SHARD_SIZE)
    for name in MODELING_FILES:
        shutil.copyfile(MODELING_DIR / name, out / name)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return out


def save_sharded(tensors: dict, out_dir: str | Path, max_shard_bytes: int = 5 * 10**9, resolve=None) -> list[str]:
    """Write `tensors` as safetensors shards of at most `max_shard_bytes`, plus
    `model.safetensors.index.json` when there are several.

    A shard's tensors are brought to the CPU only while that shard is written, so RAM stays near
    one shard. Offloaded weights (meta tensors: shape and dtype only) are read through
    `resolve(name)` at that moment."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    weight_map, total = {}, 0
    for names, filename in zip(shards, files):
        shard = {}
        for name in names:
            tensor = tensors[name]
            if tensor.device.type == "meta":
                tensor = resolve(name)
            shard[name] = tensor.detach().to("cpu").contiguous()
            weight_map[name] = filename
            total += shard[name].numel() * shard[name].element_size()
        save_file(shard, str(out / filename), metadata={"format": "pt"})
        del shard
    if len(files) > 1:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return files


def read_record(directory: str | Path) -> dict | None:
    path = Path(directory) / RECORD_FILE
    return json.loads(path.read_text()) if path.exists() else None
