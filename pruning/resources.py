"""What a run needs, from the config alone: parameters, the uniform plan, memory per stage,
where it would be placed, and a time estimate. `main.py plan` prints it; the search and `prune`
run the same check before loading, so an impossible budget or machine fails in seconds.

Memory per stage is the resident weights plus that stage's own working set (activations of one
batch, the LM-head chunk, one layer during in-place surgery, one shard while saving); the
numbers are estimates with their assumptions stated, checked against measurements in
BENCHMARKS.md.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pruning.budget import Budget
from pruning.genome import PruningPlan
from pruning.perplexity import lm_head_chunk
from pruning.importance import STAT_ROWS
from pruning.placement import Placement, parse_size, torch_device_name
from pruning.reconstruction import GRAM_ROWS, SOLVE_ROWS
from pruning.repair import repair
from pruning.space import PruningSpace

# Assumed sustained throughput of a dense forward (FLOP/s), for the time estimate only.
FORWARD_FLOPS = {"cuda": 300e12, "cpu": 0.6e12}
OFFLOAD_BYTES_PER_S = {"cpu": 20e9, "disk": 1.5e9}  # PCIe host-to-GPU; NVMe read (CPU-only: disk read)
SHARD_BYTES = parse_size("5GB")


@dataclass
class RunShape:
    """The sizes of a run that memory and time depend on."""
    batch_size: int = 4
    calib_samples: int = 64
    calib_seqlen: int = 512
    fitness_tokens: int = 2048
    fitness_seqlen: int = 512
    evaluations: int = 40  # population + generations x offspring
    test_windows: int = 32
    eval_seqlen: int = 512
    reconstruct: str = "ls"
    search: bool = True  # a search builds the refit table; `prune` re-fits its one plan only
    check_table_disk: bool = True  # the table's disk is this machine's (not a plan for GPUs elsewhere)


@dataclass
class Estimate:
    dense_params: int
    target_params: int
    average_rate: float
    plan: PruningPlan
    space: PruningSpace
    dtype_bytes: int
    placement: Placement
    stages: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> device -> bytes
    seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    capacity: dict = field(default_factory=dict)  # device -> bytes free, what the stages were checked against
    table_bytes: int = 0  # the search's refit table (input Grams per layer), on disk in the cache
    budget: Budget | None = None  # what the numbers above were derived from

    @property
    def checkpoint_bytes(self) -> int:
        return self.target_params * self.dtype_bytes

    @property
    def fits(self) -> bool:
        return not self.problems


def activation_bytes(space: PruningSpace, tokens: int, dtype_bytes: int) -> int:
    """One decoder layer's working set for `tokens` positions: hidden states, q/k/v, the MLP's
    gate/up/act."""
    shape = space.shape
    layer = max(shape.layers, key=lambda l: l.intermediate_size)
    h, d = shape.hidden_size, shape.head_dim
    width = 4 * h + (layer.num_attention_heads + 2 * layer.num_key_value_heads) * d + 3 * layer.intermediate_size
    return tokens * width * dtype_bytes


def refit_bytes(space: PruningSpace, plan, run: RunShape, dtype_bytes: int, table: bool) -> int:
    """The least-squares reconstruction's working set on the computing device: the calibration
    windows' hidden states, one batch's layer activations, and the largest projection's statistics
    and fp64 solve (pruning/reconstruction.py). The exact refit accumulates A = (k+1)^2 and
    C = out x (k+1) in fp32, parks them in CPU RAM (GPU) and solves with A's fp64 factor and C's
    fp64 transpose SOLVE_ROWS outputs at a time; the table's reference pass accumulates the whole
    Gram (n+1)^2 in fp32, moves it to CPU RAM, then builds the fp64 A and C from it block by block."""
    shape = space.shape
    hidden = run.calib_samples * run.calib_seqlen * shape.hidden_size * dtype_bytes
    work = activation_bytes(space, run.batch_size * run.calib_seqlen, dtype_bytes)
    largest = 0
    pruned = space.pruned_shape(plan)
    out = shape.hidden_size
    for dense, after in zip(shape.layers, pruned.layers):
        for n, k in ((dense.num_attention_heads * shape.head_dim, after.num_attention_heads * shape.head_dim),
                     (dense.intermediate_size, after.intermediate_size)):
            solve = (k + 1) ** 2 * 8 + SOLVE_ROWS * (k + 1) * 12  # the factor and one block (the result waits in RAM)
            if table:
                need = max((n + 1) ** 2 * 4, solve + out * (k + 1) * 8)
            else:
                need = max(((k + 1) ** 2 + out * (k + 1)) * 4 + GRAM_ROWS * (k + 1 + out) * 4, solve)
            largest = max(largest, need)
    return hidden + work + largest


def refit_table_bytes(space: PruningSpace) -> int:
    """The refit table's files: each layer's o_proj and down_proj input Grams in fp32."""
    d = space.shape.head_dim
    return sum(((layer.num_attention_heads * d + 1) ** 2 + (layer.intermediate_size + 1) ** 2) * 4
               for layer in space.shape.layers)


def largest_layer_bytes(space: PruningSpace, dtype_bytes: int) -> int:
    return max(space.shape.layer_params(layer) for layer in space.shape.layers) * dtype_bytes


def estimate(space: PruningSpace, budget: Budget, placement: Placement, dtype: torch.dtype, run: RunShape,
             capacity: dict | None = None, granularity: str = "layer") -> Estimate:
    """capacity: device -> bytes available (the budget placement worked under); checked per stage."""
    from pruning import allocation

    nbytes = dtype.itemsize
    plan = repair(allocation.uniform(space, budget, granularity), space, budget).plan
    est = Estimate(budget.dense_params, budget.target_params, budget.average_rate, plan, space, nbytes, placement,
                   capacity=dict(capacity or {}), budget=budget)
    resident = {d: placement.bytes_on(d) for d in placement.devices}
    main_key = next((d for d in placement.devices if d not in ("cpu", "disk")), "cpu")
    vocab = space.shape.vocab_size
    calib_tokens = run.batch_size * run.calib_seqlen
    fit_tokens = run.batch_size * run.fitness_seqlen
    inter = max(layer.intermediate_size for layer in space.shape.layers)
    # the statistics hooks' float64 buffers, one per input width (pruning/importance.py)
    calib_work = activation_bytes(space, calib_tokens, nbytes) + STAT_ROWS * (space.shape.hidden_size + inter) * 8
    fit_work = activation_bytes(space, fit_tokens, nbytes) + 2 * lm_head_chunk(vocab) * vocab * 4
    layer_in = largest_layer_bytes(space, nbytes) if placement.offloaded() else 0  # an offloaded layer brought in

    def stage(extra_main: int) -> dict:
        out = dict(resident)
        out[main_key] = out.get(main_key, 0) + extra_main + layer_in
        return out

    est.stages["load"] = stage(0)
    est.stages["calibration"] = stage(calib_work)
    est.stages["fitness"] = stage(fit_work)
    if run.reconstruct == "ls":
        est.stages["reconstruction"] = stage(refit_bytes(space, plan, run, nbytes, table=run.search))
        if run.search:
            est.table_bytes = refit_table_bytes(space)
    # in place: each layer is re-fitted (exact refit) before it is sliced, never both at once
    est.stages["finalize"] = stage(max(max(fit_work, activation_bytes(space, 4 * 512, nbytes)) + largest_layer_bytes(space, nbytes),
                                       refit_bytes(space, plan, run, nbytes, table=False) if run.reconstruct == "ls" else 0))
    est.stages["save"] = {**{d: b for d, b in resident.items()},
                          "cpu": resident.get("cpu", 0) + min(SHARD_BYTES, est.checkpoint_bytes) + largest_layer_bytes(space, nbytes)}
    if capacity:
        for name, need in est.stages.items():
            for device, bytes_ in need.items():
                cap = capacity.get(device)
                if device != "disk" and cap is not None and bytes_ > cap:
                    est.problems.append(f"{name}: needs {bytes_ / 2**30:.1f} GiB on {torch_device_name(device)}, "
                                        f"{cap / 2**30:.1f} GiB available")
        # The dense model's disk part is read from the checkpoint's own safetensors (transformers
        # offloads in place); the pruned model's disk part is written to the offload folder.
        if est.table_bytes and run.check_table_disk:
            from pruning.loading import cache_dir

            free = _free_disk(str(cache_dir()))
            if free is not None and est.table_bytes > free:
                est.problems.append(f"the search's refit table needs {est.table_bytes / 2**30:.1f} GiB in {cache_dir()} "
                                    f"($SELF_PRUNER_CACHE), {free / 2**30:.1f} GiB free: point it at a larger disk, or "
                                    f"--reconstruct bias|off")
        disk_need = int(placement.bytes_on("disk") * budget.target_params / budget.dense_params)
        if disk_need and placement.offload_folder:
            free = _free_disk(placement.offload_folder)
            if free is not None and disk_need > free:
                est.problems.append(f"disk offload of the pruned model needs about {disk_need / 2**30:.1f} GiB in "
                                    f"{placement.offload_folder}, {free / 2**30:.1f} GiB free")
    est.seconds = _time_estimate(space, budget, placement, run, nbytes)
    return est


def _time_estimate(space, budget, placement, run: RunShape, nbytes: int) -> dict[str, float]:
    kind = "cuda" if placement.main_device.startswith("cuda") else "cpu"
    flops = FORWARD_FLOPS[kind]
    moved = sum(placement.bytes_on(d) / OFFLOAD_BYTES_PER_S[d] for d in ("cpu", "disk")
                if d in placement.devices and (d == "disk" or kind == "cuda"))

    def forward(tokens: int, batches: int) -> float:
        return 2 * budget.dense_params * tokens / flops + moved * batches

    calib = forward(run.calib_samples * run.calib_seqlen, -(-run.calib_samples // run.batch_size))
    windows = max(1, run.fitness_tokens // run.fitness_seqlen)
    one_eval = forward(windows * run.fitness_seqlen, -(-windows // run.batch_size))
    test = forward(run.test_windows * run.eval_seqlen, -(-run.test_windows // run.batch_size))
    out = {"calibration": calib, "one fitness evaluation": one_eval}
    refit = 0.0
    if run.reconstruct == "ls":
        # measured on the embedded model: a refit pass costs about 3.4 calibration forwards (attention
        # three times, the MLP twice, the statistics); the statistics' fp32 matmuls scale with the widths
        refit = 3.4 * calib
        out["reconstruction (one refit pass)"] = refit
    passes = (2 if run.search else 1) if refit else 0  # search: the table's reference pass, then the finalized plan
    if run.search:
        out["search"] = one_eval * run.evaluations
        out["finalize (test perplexities, exact refit)"] = 4 * test + refit
        out["total"] = calib + passes * refit + one_eval * run.evaluations + 4 * test
    else:
        out["total"] = calib + refit + 2 * test
    return out


def _free_disk(folder: str) -> int | None:
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None

