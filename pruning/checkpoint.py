"""Save a physically pruned model so that ordinary tools can load it.

The directory holds safetensors weights (5 GB shards with `model.safetensors.index.json` beyond
that), a config with per-layer sizes and an `auto_map`, the
two modeling files (so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`
works anywhere transformers is installed), the tokenizer, and `pruning.json` (genome, plan,
budget, metric, source model): how the model was made.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path

MODELING_DIR = Path(__file__).parent / "hf_modeling"
MODELING_FILES = ("configuration_pruned.py", "modeling_pruned.py")
RECORD_FILE = "pruning.json"
MAX_SHARD_SIZE = "5GB"  # shards of at most this much; CPU RAM while saving stays near one shard


class DiskFullError(OSError):
    """The disk filled up while a folder was written: nothing half-written was left (exit 2)."""


class CorruptCheckpointError(ValueError):
    """A weight file that is truncated or not safetensors (exit 2, naming the file)."""


@contextmanager
def aside_folder(parent: Path, name: str):
    """A hidden folder in `parent` to write `name` into; on any error it is removed with everything
    in it, and a full disk becomes DiskFullError naming `name`. Moving the result into place is the
    caller's (a folder: `written_aside`; GGUF files: deploy/gguf_export.py)."""
    parent.mkdir(parents=True, exist_ok=True)
    partial = parent / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if is_disk_full(err):
            raise DiskFullError(errno.ENOSPC, f"no space left on the disk of {parent} while writing {name}: nothing "
                                f"half-written was left; free space or write elsewhere (--out), then run again "
                                f"(a search: --resume RUN)") from err
        raise


@contextmanager
def written_aside(out_dir: str | Path):
    """Yields a hidden sibling folder to write into; it becomes `out_dir` only once everything is
    written (a rename on the same disk), so no loader ever sees a half-written model with its
    config.json (`aside_folder`: removed on any error)."""
    out = Path(out_dir)
    with aside_folder(out.parent, out.name) as partial:
        yield partial
    if out.exists():  # a finished folder from before (a rerun into the same --out): replaced whole
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(out)


def is_disk_full(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def save_pruned(model, tokenizer, out_dir: str | Path, record: dict) -> Path:
    out = Path(out_dir)
    with written_aside(out) as partial:
        # transformers writes shards one at a time and reads offloaded weights back per shard.
        with warnings.catch_warnings():  # its offload warning quotes the 50GB default; our shards are 5 GB
            warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
            model.save_pretrained(partial, max_shard_size=MAX_SHARD_SIZE)
        for name in MODELING_FILES:
            shutil.copyfile(MODELING_DIR / name, partial / name)
        if tokenizer is not None:
            tokenizer.save_pretrained(partial)
        (partial / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return out


def check_safetensors(folder: str | Path) -> None:
    """Every *.safetensors file in `folder` is whole: its header parses and its data ends exactly
    where the header says (a copy or download cut short fails here, naming the file, instead of as a
    raw error deep inside a loader)."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        size = path.stat().st_size
        try:
            with path.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > size - 8:
                    raise ValueError("header longer than the file")
                header = json.loads(handle.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({err}); the checkpoint is "
                                         f"damaged: save or copy it again") from None
        if 8 + length + end != size:
            raise CorruptCheckpointError(f"{path}: {size:,} bytes where its header needs {8 + length + end:,}: the file "
                                         f"is truncated or damaged; save or copy the checkpoint again") from None


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
