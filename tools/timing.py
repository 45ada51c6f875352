"""Inference timing: prefill latency over a batch x sequence-length grid, greedy decode
throughput, peak memory. CUDA events (synchronised) on GPU, perf_counter on CPU; warm-up runs,
then the median of repeats with its spread."""
from __future__ import annotations

import resource
import statistics
import time

import torch


def _clock(device: torch.device):
    if device.type == "cuda":
        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0
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
    device = next(model.parameters()).device
    clock = _clock(device)
    vocab = vocab or model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
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
    memory = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"device": str(device), "prefill": prefill,
            "decode": _stats(times) | {"tokens": decode_tokens, "tokens_per_s": decode_tokens / statistics.median(times)},
            "peak_memory_gb": memory, "memory_kind": "cuda max allocated" if device.type == "cuda" else "process peak RSS"}


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
