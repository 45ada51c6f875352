"""--cpu-heap: with the mmap threshold fixed, a freed multi-MB buffer goes back to the system even
after glibc's dynamic threshold would have moved such buffers onto the heap."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from assembly.cpu_heap import configure_cpu_heap

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import torch
    from assembly.cpu_heap import configure_cpu_heap

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    fixed = configure_cpu_heap({choice!r}, "cpu")
    big = torch.ones(24 * 2**20, dtype=torch.uint8)  # mapped; freeing it raises glibc's dynamic threshold
    del big
    buffer = torch.ones(8 * 2**20, dtype=torch.uint8)  # an activation-sized buffer
    pin = torch.ones(64 * 2**10, dtype=torch.uint8)  # above it on the heap: the heap's top cannot shrink
    before = rss()
    del buffer
    print(fixed, (before - rss()) / 2**20)
""")


def child(choice: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), choice=choice)],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_bounded_heap_returns_freed_buffers():
    fixed, released_mb = child("bounded")
    assert fixed
    assert released_mb >= 7.5  # the 8 MiB buffer left the process
    fixed, released_mb = child("glibc")
    assert not fixed
    assert released_mb < 1  # glibc's default kept it on the heap: the fragmentation --cpu-heap avoids


def test_auto_fixes_the_threshold_only_for_cpu_compute():
    assert configure_cpu_heap("glibc", "cpu") is False
    assert configure_cpu_heap("auto", "cuda:0") is False
