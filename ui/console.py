"""One shared rich console (stderr for progress, stdout for results) and progress bars."""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()
err_console = Console(stderr=True)
_STARTED = time.perf_counter()
STAGES: list[dict] = []  # every finished stage: name, seconds, peak GPU memory (GiB, all GPUs) when on CUDA


def gpu_peak_gib() -> float | None:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    from evaluation.timing import process_peak_bytes  # timing resets the counter; this keeps the process peak

    return sum(process_peak_bytes(i) for i in range(torch.cuda.device_count())) / 2**30


def plain_output() -> bool:
    """Logs (nohup, Slurm): no live views or bars reach a file, so print one line per step."""
    return not err_console.is_terminal


def log_line(text: str) -> None:
    """A timestamped line for logs (only when stderr is not a terminal)."""
    if plain_output():
        elapsed = time.perf_counter() - _STARTED
        print(f"[{int(elapsed // 3600):d}:{int(elapsed % 3600 // 60):02d}:{int(elapsed % 60):02d}] {text}",
              file=sys.stderr, flush=True)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """One named step: logged with its duration in plain output; running out of GPU memory inside
    it becomes one line naming the step (pruning.placement.OutOfMemory)."""
    import torch

    from pruning.placement import OutOfMemory

    started = time.perf_counter()
    log_line(f"{name} ...")
    try:
        yield
    except torch.OutOfMemoryError as err:
        raise OutOfMemory(name, str(err)) from err
    seconds, peak = time.perf_counter() - started, gpu_peak_gib()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    STAGES.append({"stage": name, "seconds": seconds, "gpu_peak_gib": peak, "peak_rss_gb": rss})
    log_line(f"{name} done in {seconds:.1f} s" + (f", peak GPU memory of the process {peak:.1f} GiB" if peak is not None else "")
             + f", peak RSS {rss:.2f} GB")


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields a callback (done, total) that drives one progress bar on stderr (a log line when
    stderr is not a terminal)."""
    log_line(description)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def fail(message: str) -> None:
    from rich.markup import escape

    # the message is text, not markup: "pip install 'self-pruner[ray]'" must keep its brackets
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
