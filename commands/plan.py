"""`main.py plan --model M (--budget B | --rate R)`: what a run needs, before any weight is loaded.

Reads the config only (a local config.json, or the hub's): parameters, the uniform plan per
layer, the pruned checkpoint's size, memory per stage, whether and how it fits the visible
devices, and a time estimate.
"""
from __future__ import annotations

import json

from rich.table import Table

from assembly.placement_options import feasibility, offload_folder_for
from pruning.budget import format_params
from pruning.placement import torch_device_name
from ui.console import console


def plan_rows(est) -> list[tuple[str, int, int, int]]:
    """(layers, query heads, KV heads, MLP width), consecutive identical layers merged."""
    shape = est.space.pruned_shape(est.plan)
    rows: list[list] = []
    for i, layer in enumerate(shape.layers):
        key = (layer.num_attention_heads, layer.num_key_value_heads, layer.intermediate_size)
        if rows and rows[-1][1:] == list(key) and rows[-1][0][1] == i - 1:
            rows[-1][0] = (rows[-1][0][0], i)
        else:
            rows.append([(i, i), *key])
    return [(f"{a}" if a == b else f"{a}-{b}", q, kv, w) for (a, b), q, kv, w in rows]


def run_plan(args) -> int:
    from assembly.config import RunConfig

    if args.budget is None and args.rate is None:
        args.rate = 0.2
    settings = RunConfig.from_args(args).prune_settings()
    est = feasibility(args, settings, offload_folder_for(args, "runs/<run-id>"), hypothetical=True)
    dense = est.space.shape
    console.print(f"[bold]{args.model}[/]: {format_params(est.dense_params)} parameters "
                  f"({est.dense_params:,}); {dense.num_layers} layers, hidden {dense.hidden_size}, "
                  f"{dense.layers[0].num_attention_heads} query / {dense.layers[0].num_key_value_heads} KV heads, "
                  f"MLP {dense.layers[0].intermediate_size}, vocab {dense.vocab_size}, "
                  f"{'tied' if dense.tie_word_embeddings else 'untied'} embeddings")
    console.print(f"target: {format_params(est.target_params)} ({est.target_params:,}); average rate "
                  f"{est.average_rate:.3f} of the decoder blocks; uniform plan realises "
                  f"{format_params(est.space.total_params(est.plan))}")
    table = Table(title="uniform plan (Wanda-sp's baseline; the search moves rates between layers)")
    for col in ("layers", "query heads", "KV heads", "MLP width"):
        table.add_column(col, justify="right")
    for row in plan_rows(est):
        table.add_row(*(str(x) for x in row))
    console.print(table)
    console.print(f"pruned checkpoint: {est.checkpoint_bytes / 1e9:.1f} GB at {est.dtype_bytes * 8}-bit "
                  f"(5 GB shards); dense weights {est.dense_params * est.dtype_bytes / 2**30:.1f} GiB")
    memory = Table(title="memory per stage (GiB, estimate)")
    devices = [d for d in est.placement.devices] + (["cpu"] if "cpu" not in est.placement.devices else [])
    memory.add_column("stage")
    for device in devices:
        cap = est.capacity.get(device)
        memory.add_column(f"{torch_device_name(device)}" + (f" (of {cap / 2**30:.0f})" if cap else ""), justify="right")
    for stage, need in est.stages.items():
        memory.add_row(stage, *(f"{need.get(d, 0) / 2**30:.1f}" for d in devices))
    console.print(memory)
    console.print(est.placement.describe())
    if est.table_bytes:
        console.print(f"refit table of the search (--reconstruct ls): {est.table_bytes / 2**30:.1f} GiB on disk "
                      f"(input Gram matrices per layer, fp32, in the cache folder)")
    if est.fits:
        console.print("[green]fits[/] this machine with the placement above")
    else:
        console.print("[red]does not fit[/]: " + "; ".join(est.problems))
    times = ", ".join(f"{k} {v / 60:.1f} min" if v >= 60 else f"{k} {v:.0f} s" for k, v in est.seconds.items())
    console.print(f"time (rough: {'300 TFLOP/s per GPU' if est.placement.main_device != 'cpu' else '0.6 TFLOP/s CPU'}, "
                  f"offload traffic included): {times}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "dense_params": est.dense_params, "target_params": est.target_params,
                       "average_rate": est.average_rate, "uniform_plan": [list(r) for r in plan_rows(est)],
                       "checkpoint_bytes": est.checkpoint_bytes, "placement": {k: str(v) for k, v in est.placement.device_map.items()},
                       "memory_bytes": {s: {str(k): v for k, v in n.items()} for s, n in est.stages.items()},
                       "fits": est.fits, "problems": est.problems, "seconds": est.seconds,
                       "refit_table_bytes": est.table_bytes}, fh, indent=2)
    return 0 if est.fits else 1
