"""Where a model's weights live: one GPU, several GPUs, CPU RAM, or disk (accelerate).

A *unit* is what placement moves as a whole: the embeddings, each decoder layer, the final norm,
the rotary embedding and the LM head. `place` chooses a device per unit from the config alone
(meta tensors, no weights): the whole model on one GPU when it fits, else balanced over the
visible GPUs, else the remainder offloaded to CPU RAM and then to disk; `--max-memory` in
accelerate's form (`0=70GiB,1=70GiB,cpu=200GiB`) caps each device.

Offloaded weights live on the `meta` device between forwards (accelerate's hooks bring them in);
code that reads a weight outside a forward must go through `materialized(module)`, never
`.weight` directly. `execution_device(module)` is where a module's inputs must be.
"""
from __future__ import annotations

import os
import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

GPU_RESERVE_BYTES = 2 * 2**30  # at least: activations of a fitness batch, the LM-head chunk, CUDA context
CPU_RESERVE_FRACTION = 0.15  # of available RAM: the process, the tokenizer, calibration statistics
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


class PlacementError(ValueError):
    """A placement that cannot work (bad --max-memory, too little memory anywhere)."""


class OutOfMemory(PlacementError):
    """Out of GPU memory in a named stage: one line saying what was needed and what to pass."""

    def __init__(self, stage: str, detail: str, resume_hint: str = ""):
        match = re.search(r"Tried to allocate ([0-9.]+ [KMGT]iB)", detail)
        needed = f" (it tried to allocate {match.group(1)})" if match else ""
        super().__init__(
            f"out of GPU memory during {stage}{needed}: pass --max-memory (e.g. 0=70GiB,cpu=200GiB) to keep part "
            f"of the model in CPU RAM or on disk, or a smaller --batch-size" + (f"; {resume_hint}" if resume_hint else ""))
        self.stage = stage


# -- --max-memory ------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """'70GiB' -> 75161927680, '700MB' -> 700000000, '1.5GB', '123' (bytes)."""
    match = _SIZE.match(str(text))
    if not match:
        raise PlacementError(f"cannot read memory size {text!r}: use e.g. 70GiB, 700MB, 1.5GB")
    value, unit = float(match.group(1)), (match.group(2) or "").lower()
    scale = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
             "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}.get(unit)
    if scale is None:
        raise PlacementError(f"cannot read memory size {text!r}: unknown unit {unit!r}")
    return int(value * scale)


def parse_max_memory(spec: str | None) -> dict[int | str, int] | None:
    """'0=70GiB,1=70GiB,cpu=200GiB' -> {0: ..., 1: ..., 'cpu': ...} (bytes)."""
    if not spec:
        return None
    out: dict[int | str, int] = {}
    for item in spec.split(","):
        key, sep, size = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PlacementError(f"--max-memory {spec!r}: use DEVICE=SIZE pairs, e.g. 0=70GiB,1=70GiB,cpu=200GiB")
        if key.isdigit():
            out[int(key)] = parse_size(size)
        elif key.startswith("cuda:") and key[5:].isdigit():
            out[int(key[5:])] = parse_size(size)
        elif key in ("cpu", "disk"):
            out[key] = parse_size(size)
        else:
            raise PlacementError(f"--max-memory: unknown device {key!r}; use GPU indices (0, 1, ...), cpu or disk")
    return out


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (bytes); the total when that is unreadable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def physical_memory(gpus: list[int]) -> dict[int | str, int]:
    """What each device really has free now (the limit for weights plus working sets)."""
    out: dict[int | str, int] = {index: torch.cuda.mem_get_info(index)[0] for index in gpus}
    out["cpu"] = available_ram()
    return out


def gpu_reserve(sizes: dict[str, int]) -> int:
    """GPU memory kept free of weights: a batch's activations plus two layers' worth (an offloaded
    layer brought in, and the slices of the layer being pruned in place)."""
    largest = max((b for u, b in sizes.items() if u.startswith("model.layers.")), default=0)
    return max(GPU_RESERVE_BYTES, 2 * largest + 2**30)


def default_max_memory(gpus: list[int], reserve: int = GPU_RESERVE_BYTES) -> dict[int | str, int]:
    """What each visible device can take: free GPU memory less a reserve, most of the free RAM."""
    budget: dict[int | str, int] = {}
    for index in gpus:
        free, _ = torch.cuda.mem_get_info(index)
        budget[index] = max(0, free - reserve)
    budget["cpu"] = int(available_ram() * (1 - CPU_RESERVE_FRACTION))
    return budget


# -- units and the plan ------------------------------------------------------------------------

def unit_names(model: nn.Module) -> list[str]:
    """Embeddings, every decoder layer, final norm, rotary embedding, LM head (in forward order)."""
    decoder = model.model
    names = ["model.embed_tokens"] + [f"model.layers.{i}" for i in range(len(decoder.layers))] + ["model.norm"]
    if getattr(decoder, "rotary_emb", None) is not None:
        names.append("model.rotary_emb")
    names.append("lm_head")
    return names


def expand_device_map(device_map: dict, model: nn.Module) -> dict[str, int | str]:
    """accelerate's merged map ({'model': 0, 'lm_head': 'cpu'}) -> one entry per unit."""
    out = {}
    for unit in unit_names(model):
        parts = unit.split(".")
        for k in range(len(parts), -1, -1):
            prefix = ".".join(parts[:k])
            if prefix in device_map:
                out[unit] = device_map[prefix]
                break
    if "model.rotary_emb" in out or "model.rotary_emb" not in unit_names(model):
        return out
    out["model.rotary_emb"] = out["model.embed_tokens"]  # buffers only; accelerate may leave it out
    return out


@dataclass
class Placement:
    device_map: dict[str, int | str]  # unit -> GPU index, "cpu" or "disk"
    offload_folder: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)  # unit -> bytes

    @property
    def devices(self) -> list:
        seen = []
        for device in self.device_map.values():
            if device not in seen:
                seen.append(device)
        return seen

    @property
    def single_device(self) -> str | None:
        """'cuda:0' or 'cpu' when everything is on one device and nothing is offloaded."""
        devices = self.devices
        if len(devices) != 1 or devices[0] == "disk":
            return None
        return torch_device_name(devices[0])

    @property
    def main_device(self) -> str:
        gpus = [d for d in self.devices if d not in ("cpu", "disk")]
        return torch_device_name(gpus[0]) if gpus else "cpu"

    def offloaded(self) -> list[str]:
        """Units whose weights are not resident on their execution device."""
        off = ("disk",) if self.main_device == "cpu" else ("cpu", "disk")
        return [u for u, d in self.device_map.items() if d in off]

    def bytes_on(self, device) -> int:
        return sum(self.sizes.get(u, 0) for u, d in self.device_map.items() if d == device)

    def describe(self) -> str:
        """One line: which layers sit where, how many units are offloaded."""
        parts = []
        for device in self.devices:
            layers = [int(u.rsplit(".", 1)[1]) for u, d in self.device_map.items()
                      if d == device and u.startswith("model.layers.")]
            others = [u.split(".")[-1] for u, d in self.device_map.items() if d == device and not u.startswith("model.layers.")]
            what = []
            if layers:
                what.append(f"layers {_ranges(layers)}")
            what += others
            gib = self.bytes_on(device) / 2**30
            parts.append(f"{torch_device_name(device)}: {', '.join(what)} ({gib:.1f} GiB)")
        off = self.offloaded()
        tail = f"; {len(off)} units offloaded" + (f" (disk folder {self.offload_folder})" if "disk" in self.devices else "") if off else "; nothing offloaded"
        return "placement: " + " | ".join(parts) + tail


def torch_device_name(device) -> str:
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def _ranges(values: list[int]) -> str:
    values = sorted(values)
    out, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(out)


def unit_sizes(model: nn.Module, dtype: torch.dtype) -> dict[str, int]:
    """Bytes per unit at `dtype` (meta models too: shapes only)."""
    sizes = {}
    for unit in unit_names(model):
        module = model.get_submodule(unit)
        sizes[unit] = sum(p.numel() * (dtype.itemsize if p.is_floating_point() else p.element_size())
                          for p in module.parameters())
    return sizes


def place(meta_model: nn.Module, dtype: torch.dtype, device: str, max_memory: dict | None = None,
          offload_folder: str | None = None, gpus: list[int] | None = None) -> Placement:
    """Choose a device per unit for `meta_model` (built on meta; only shapes are read).

    device: 'cpu', 'cuda' (all visible GPUs), or 'cuda:N' (that GPU only).
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    sizes = unit_sizes(meta_model, dtype)
    total = sum(sizes.values())
    no_split = [type(meta_model.model.layers[0]).__name__]
    if device.startswith("cpu"):
        gpus = []
    elif gpus is None:
        gpus = [int(device.split(":")[1])] if ":" in device else list(range(torch.cuda.device_count()))
    reserve = gpu_reserve(sizes)
    if max_memory is None:
        budget = default_max_memory(gpus, reserve) if gpus else {"cpu": int(available_ram() * (1 - CPU_RESERVE_FRACTION))}
    else:  # as in accelerate: the GPUs named are the GPUs used; RAM unnamed = most of what is free.
        # A GPU's figure is all it may hold: its weights get that less the working-set reserve.
        budget = {k: (max(0, v - reserve) if isinstance(k, int) else v)
                  for k, v in max_memory.items() if k in gpus or k == "cpu"}
        budget.setdefault("cpu", int(available_ram() * (1 - CPU_RESERVE_FRACTION)))
    gpu_budget = {k: v for k, v in budget.items() if isinstance(k, int)}
    if gpu_budget:
        first = min(gpu_budget)
        if total <= gpu_budget[first]:
            return Placement({u: first for u in sizes}, None, sizes)  # fits one GPU: no hooks at all
    elif total <= budget.get("cpu", 0):
        return Placement({u: "cpu" for u in sizes}, None, sizes)
    if len(gpu_budget) > 1 and total <= sum(gpu_budget.values()):
        budget = get_balanced_memory(meta_model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    device_map = infer_auto_device_map(meta_model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    device_map = expand_device_map(device_map, meta_model)
    if "disk" in device_map.values() and offload_folder is None:
        raise PlacementError("the model needs disk offload under this --max-memory: pass --offload-folder DIR")
    return Placement(device_map, offload_folder if "disk" in device_map.values() else None, sizes)


# -- giving memory back ---------------------------------------------------------------------------

MADV_PAGEOUT = 21  # Linux >= 5.4: reclaim these pages now (file pages are dropped; data stays readable)


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's file-backed mappings (Linux; empty elsewhere)."""
    ranges = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[4] != "0" and parts[5].startswith("/"):
                    lo, hi = parts[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        pass
    return ranges


def release_file_pages(tensors) -> int:
    """Hand back the pages of CPU tensors that are views into a memory-mapped file (transformers
    loads a safetensors checkpoint of the same dtype that way): freeing such a tensor does not
    unmap the file, so without this the dense weights of a layer pruned in place stay resident
    (measured: a search on a 0.74B checkpoint peaked at +0.35x the dense weights, vs 0.125x with
    weights made in memory). MADV_PAGEOUT never loses data: a page read again is read from the
    file. Returns the bytes advised (0 off Linux or for anonymous memory)."""
    import ctypes
    import mmap

    spans = [(t.data_ptr(), t.numel() * t.element_size()) for t in tensors
             if t.device.type == "cpu" and t.numel() > 0]
    if not spans:
        return 0
    mappings = _file_mappings()
    if not mappings:
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return 0
    page, advised = mmap.PAGESIZE, 0
    for start, size in spans:
        if not any(lo <= start and start + size <= hi for lo, hi in mappings):
            continue
        lo, hi = -(-start // page) * page, (start + size) // page * page  # whole pages inside the tensor
        if hi > lo and libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), MADV_PAGEOUT) == 0:
            advised += hi - lo
    return advised


# -- reading weights wherever they are ---------------------------------------------------------

@contextmanager
def materialized(*modules: nn.Module):
    """Within the block, the modules' own parameters are real tensors on their execution device
    (offloaded ones are brought in by accelerate's hook and released after)."""
    from accelerate.utils import align_module_device

    with ExitStack() as stack:
        for module in modules:
            stack.enter_context(align_module_device(module))
        yield


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its hook's execution device, else its first real tensor's device."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and getattr(hook, "execution_device", None) is not None:
        return torch.device(torch_device_name(hook.execution_device))
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    for child in module.modules():
        hook = getattr(child, "_hf_hook", None)
        if hook is not None and getattr(hook, "execution_device", None) is not None:
            return torch.device(torch_device_name(hook.execution_device))
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where token ids must go: the embedding's execution device."""
    return execution_device(model.get_input_embeddings())


def model_placement(model: nn.Module) -> Placement | None:
    return getattr(model, "self_pruner_placement", None)


def is_dispatched(model: nn.Module) -> bool:
    """True when accelerate's hooks place the model over several devices or offload it."""
    placement = model_placement(model)
    if placement is not None:
        return placement.single_device is None
    return bool(getattr(model, "hf_device_map", None)) and len(set(model.hf_device_map.values())) > 1


# -- putting units where a placement says -----------------------------------------------------

class UnitWriter:
    """Moves a unit's freshly made tensors to its place: kept on its GPU / CPU, or written to the
    offload folder (disk) and left on meta. `finish` attaches accelerate's hooks."""

    def __init__(self, model: nn.Module, placement: Placement, offload_folder: str | None = None):
        self.model, self.placement = model, placement
        self.offload_folder = offload_folder
        self.index: dict = {}
        if "disk" in placement.device_map.values():
            if offload_folder is None:
                raise PlacementError("disk offload needs an offload folder")
            Path(offload_folder).mkdir(parents=True, exist_ok=True)
            stale = Path(offload_folder) / "index.json"
            if stale.exists():
                stale.unlink()  # a previous model's index must not be reused

    def target(self, unit: str) -> torch.device:
        device = self.placement.device_map[unit]
        return torch.device("cpu") if device in ("cpu", "disk") else torch.device(torch_device_name(device))

    def put(self, unit: str, tensors: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor] | None = None) -> None:
        """tensors: parameters, named relative to the unit (e.g. 'self_attn.q_proj.weight');
        buffers stay resident (on the CPU for disk units), as accelerate expects."""
        from accelerate.utils import offload_weight, set_module_tensor_to_device

        module = self.model.get_submodule(unit)
        disk = self.placement.device_map[unit] == "disk"
        target = self.target(unit)
        for name, value in tensors.items():
            value = value.to(target)
            if disk:
                offload_weight(value, f"{unit}.{name}", self.offload_folder, index=self.index)
                set_module_tensor_to_device(module, name, "meta", dtype=value.dtype)
            else:
                set_module_tensor_to_device(module, name, target, value=value, dtype=value.dtype)
        for name, value in (buffers or {}).items():
            set_module_tensor_to_device(module, name, target, value=value.to(target), dtype=value.dtype)

    def finish(self) -> nn.Module:
        from accelerate import dispatch_model
        from accelerate.utils import save_offload_index

        self.model.self_pruner_placement = self.placement
        if self.placement.single_device is not None:
            self.model.hf_device_map = {"": self.placement.device_map[next(iter(self.placement.device_map))]}
            return self.model
        if self.index:
            save_offload_index(self.index, self.offload_folder)
        dispatch_model(self.model, device_map=self.placement.device_map, main_device=self.placement.main_device,
                       offload_dir=self.offload_folder if self.index else None)
        return self.model
