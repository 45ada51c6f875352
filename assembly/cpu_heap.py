"""How the C heap hands memory back on runs that compute on the CPU (`--cpu-heap`).

glibc serves a request below its mmap threshold from the heap, and the threshold is dynamic: each
time a larger mapped block is freed it rises (up to 32 MiB), after which a forward pass's
activation buffers of a few MB come from the heap and, once freed, stay there as holes. Calibrating
a 0.75B Llama on this CPU grew the process by 0.2-2.5 GB, differently in runs of identical work
(BENCHMARKS.md, "On this CPU: memory"); `plan` could not promise a peak. A fixed 4 MiB threshold
gives every larger buffer its own mapping, returned to the system when freed: the same search
peaked at 2.09 GB (load-only 1.92 GB), at 5-25% more CPU time (every such buffer's pages are
faulted in anew). GPU runs keep glibc's default: their activations are not on the C heap.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
BOUNDED_THRESHOLD = 4 * 2**20
CHOICES = ("auto", "bounded", "glibc")


def fix_mmap_threshold(threshold: int = BOUNDED_THRESHOLD) -> bool:
    """mallopt(M_MMAP_THRESHOLD, threshold): False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl, macOS: other allocators, other knobs
            return False
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except OSError:
        return False


def configure_cpu_heap(choice: str, compute_device: str) -> bool:
    """auto: bounded when the model computes on the CPU; bounded: always; glibc: leave glibc's
    default. Returns whether the threshold was fixed."""
    if choice == "bounded" or (choice == "auto" and compute_device == "cpu"):
        return fix_mmap_threshold()
    return False
