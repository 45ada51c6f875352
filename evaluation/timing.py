"""Inference timing: prefill latency over a batch x sequence-length grid, greedy decode
throughput, peak memory. perf_counter between synchronisations of every GPU the model uses (a
model spread over GPUs finishes on its last one), perf_counter alone on CPU; warm-up runs,
then the median of repeats with its spread."""
from __future__ import annotations

import resource
import statistics
import time

import torch

from pruning.placement import input_device, model_placement, torch_device_name


PEAK_BEFORE_RESET: dict[int, int] = {}  # per GPU: the process's peak before a timing reset it


def reset_peak(gpu: torch.device) -> None:
    """Reset the GPU's peak counter for a timing, keeping the process-wide peak (ui.console reads it)."""
    index = gpu.index or 0
    PEAK_BEFORE_RESET[index] = max(PEAK_BEFORE_RESET.get(index, 0), torch.cuda.max_memory_allocated(gpu))
    torch.cuda.reset_peak_memory_stats(gpu)


def process_peak_bytes(index: int) -> int:
    return max(PEAK_BEFORE_RESET.get(index, 0), torch.cuda.max_memory_allocated(index))


def _cuda_devices(model) -> list[torch.device]:
    """Every GPU holding or computing part of the model (several when it is spread)."""
    placement = model_placement(model)
    if placement is not None:
        return [torch.device(torch_device_name(d)) for d in placement.devices if d not in ("cpu", "disk")]
    return sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)


def _clock(device: torch.device, gpus: list[torch.device]):
    if device.type == "cuda":
        def run(fn):
            for gpu in gpus:
                torch.cuda.synchronize(gpu)
            start = time.perf_counter()
            fn()
            for gpu in gpus:  # the pass ends on the last GPU of the pipeline
                torch.cuda.synchronize(gpu)
            return time.perf_counter() - start
    else:
        def run(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
    return run


def _stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times)}


@torch.inference_mode()
def time_model(model, batch_sizes=(1, 4), seqlens=(128, 512), decode_tokens: int = 32, repeats: int = 3,
               warmup: int = 1, vocab: int | None = None, seed: int = 0) -> dict:
    device = input_device(model)
    gpus = _cuda_devices(model) or ([device] if device.type == "cuda" else [])
    clock = _clock(device, gpus)
    vocab = vocab or model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    for gpu in gpus:
        reset_peak(gpu)
    prefill = {}
    for batch in batch_sizes:
        for seqlen in seqlens:
            ids = torch.randint(0, vocab, (batch, seqlen), generator=generator).to(device)
            fn = lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1)  # noqa: E731
            for _ in range(warmup):
                fn()
            times = [clock(fn) for _ in range(repeats)]
            prefill[f"{batch}x{seqlen}"] = _stats(times) | {"tokens_per_s": batch * seqlen / statistics.median(times)}
    prompt = torch.randint(0, vocab, (1, 16), generator=generator).to(device)
    decode = lambda: model.generate(prompt, max_new_tokens=decode_tokens, min_new_tokens=decode_tokens,  # noqa: E731
                                    do_sample=False, pad_token_id=0)
    for _ in range(warmup):
        decode()
    times = [clock(decode) for _ in range(repeats)]
    memory = (sum(torch.cuda.max_memory_allocated(gpu) for gpu in gpus) / 2**30 if gpus
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"device": ",".join(str(g) for g in gpus) or str(device), "prefill": prefill,
            "decode": _stats(times) | {"tokens": decode_tokens, "tokens_per_s": decode_tokens / statistics.median(times)},
            "peak_memory_gb": memory,
            "memory_kind": "cuda max allocated (all GPUs)" if gpus else "process peak RSS"}


def speedups(dense: dict, pruned: dict, dense_params: int, pruned_params: int) -> dict:
    """Measured speed-up per setting beside the ideal (the parameter ratio)."""
    out = {"ideal": dense_params / pruned_params}
    for key, row in dense["prefill"].items():
        out[f"prefill {key}"] = row["median_s"] / pruned["prefill"][key]["median_s"]
    out["decode"] = pruned["decode"]["tokens_per_s"] / dense["decode"]["tokens_per_s"]
    return out


def compare_timing(dense_model, pruned_model, dense_params: int, pruned_params: int, **grid) -> dict:
    """Dense and pruned timed on the same grid, with the speed-ups beside the ideal."""
    dense, pruned = time_model(dense_model, **grid), time_model(pruned_model, **grid)
    return {"dense": dense, "pruned": pruned, "params": [dense_params, pruned_params],
            "speedup": speedups(dense, pruned, dense_params, pruned_params)}
