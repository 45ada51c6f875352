"""Shared helpers for benchmark scripts: machine facts, resumable JSON results, timing."""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__,
    }


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


class ResultStore:
    """A JSON file of named results; finished entries are skipped on a rerun (resumable)."""

    def __init__(self, name: str, root: Path = RESULTS):
        self.root = Path(root)
        self.path = self.root / f"{name}.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def has(self, key: str) -> bool:
        return key in self.data

    def drop(self, key: str) -> None:
        self.data.pop(key, None)
        self._write()

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self._write()

    def _write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)


def uniform_pruned(context, rate: float):
    """The paper's baseline at `rate` (uniform Wanda-sp, layer granularity, exactly as a search's
    report makes it): (pruned model, its parameters, dense parameters)."""
    from pruning.prepare import make_budget
    from evaluation.finalize import uniform_wanda_sp

    budget = make_budget(context.space, None, rate, "layer")
    baseline, result = uniform_wanda_sp(context, budget)
    return baseline.prune(result.plan), result.total_params, budget.dense_params


def timed(fn, repeats: int = 3, warmup: int = 1) -> dict:
    """Median and spread of wall time (CUDA synchronised when on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}
