"""The placement options shared by the search, `prune` and `plan`: the check that runs before any
weight is read, the offload folders, and the placement line printed before calibration."""
from __future__ import annotations

from dataclasses import replace

import logging
from pathlib import Path

import torch

from assembly.cpu_heap import configure_cpu_heap
from pruning.budget import format_params
from pruning.placement import Placement, PlacementError, parse_max_memory, physical_memory, place
from pruning.resources import Estimate, RunShape, estimate


def offload_folder_for(args, run_dir: Path) -> str:
    """--offload-folder, else `offload/` inside the run folder (used only if disk offload is needed)."""
    return str(Path(args.offload_folder) if getattr(args, "offload_folder", None) else Path(run_dir) / "offload")


def pruned_offload_folder(loaded) -> str | None:
    """Where the pruned model's disk-offloaded layers go (beside the dense model's)."""
    placement = getattr(loaded.model, "self_pruner_placement", None)
    if placement is None or "disk" not in placement.device_map.values():
        return None
    return str(Path(placement.offload_folder) / "pruned")


def show_placement(placement: Placement) -> None:
    from ui.console import err_console, log_line, plain_output

    if plain_output():
        log_line(placement.describe())
    else:
        err_console.print(placement.describe(), highlight=False)


def run_shape(args) -> RunShape:
    evaluations = getattr(args, "population", 0) + getattr(args, "generations", 0) * getattr(args, "offspring", 0)
    return RunShape(batch_size=args.batch_size, calib_samples=args.calib_samples, calib_seqlen=args.calib_seqlen,
                    fitness_tokens=getattr(args, "fitness_tokens", 2048), fitness_seqlen=getattr(args, "fitness_seqlen", 512),
                    evaluations=evaluations, test_windows=getattr(args, "final_eval_windows", None) or getattr(args, "eval_windows", 0) or 32,
                    eval_seqlen=getattr(args, "eval_seqlen", 512), reconstruct=getattr(args, "reconstruct", "ls"),
                    search=hasattr(args, "population"))


def feasibility(args, settings, offload_folder: str | None, hypothetical: bool = False) -> Estimate:
    """From the config alone (meta device, no weights, no tokenizer): budget, placement, memory.

    hypothetical: GPUs named in --max-memory are taken as given even where none is visible
    (`plan` on a laptop for an H200 node); their sizes are then also what is free.
    """
    from pruning.loading import empty_model, load_config, resolve_device, resolve_dtype, resolve_source
    from pruning.prepare import make_budget, make_space

    limits = parse_max_memory(getattr(args, "max_memory", None))
    named_gpus = sorted(k for k in (limits or {}) if isinstance(k, int))
    imagined = hypothetical and named_gpus and not torch.cuda.is_available() and args.device in ("auto", "cuda")
    device = "cuda" if imagined else resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)  # imagined GPUs: bf16
    source = resolve_source(args.model)
    meta = empty_model(load_config(args.model, source), dtype)
    space = make_space(meta, settings)
    budget = make_budget(space, args.budget, args.rate if args.budget is None else None, settings.granularity)
    if imagined:
        quiet = logging.getLogger("accelerate.utils.modeling")  # "Device 0 is not available": we know
        level, quiet.level = quiet.level, logging.ERROR
        try:
            placement = place(meta, dtype, device, limits, offload_folder, gpus=named_gpus)
        finally:
            quiet.setLevel(level)
        free = {**physical_memory([]), **{k: v for k, v in limits.items() if isinstance(k, int)}}
        if "cpu" in limits:
            free["cpu"] = limits["cpu"]
    else:
        placement = place(meta, dtype, device, limits, offload_folder)
        # --max-memory caps where weights go; what a stage needs beyond them is checked against what is free
        free = physical_memory([d for d in placement.devices if isinstance(d, int)])
    shape = replace(run_shape(args), check_table_disk=not imagined)  # imagined GPUs: their disk is not this one
    return estimate(space, budget, placement, dtype, shape, free, settings.granularity)


def check_feasible(args, settings, offload_folder: str | None = None) -> Estimate:
    """Fail in seconds, before a download or a load, when the budget or the machine cannot work."""
    est = feasibility(args, settings, offload_folder or "offload")
    if not est.fits:
        raise PlacementError(f"{args.model} at {format_params(est.target_params)} params will not run here: "
                             + "; ".join(est.problems) + ". See `python main.py plan` and pass --max-memory")
    return est



def ready_machine(args, settings, offload_folder: str | None = None) -> Estimate:
    """Before any weight is read: the budget and the machine checked (`check_feasible`), then the C
    heap set for where the model will compute (`--cpu-heap`, assembly/cpu_heap.py)."""
    from pruning.budget import heavy_budget_warning
    from ui.console import err_console

    est = check_feasible(args, settings, offload_folder)
    heavy = heavy_budget_warning(est.budget)
    if heavy:
        err_console.print(f"[bold yellow]warning:[/] {heavy}")
    configure_cpu_heap(getattr(args, "cpu_heap", "auto"), est.placement.main_device)
    return est
