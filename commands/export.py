"""`main.py export MODEL --format gguf|decilm`: the checkpoint for llama.cpp or vLLM."""
from __future__ import annotations

import time
from pathlib import Path

from deploy.checkpoint_reader import ExportError
from deploy.exports import export_gguf, gguf_targets, parse_quants
from ui.console import console, err_console, progress_bar


def checkpoint_dir(target: str) -> tuple[Path, str, Path]:
    """(folder, short name, where exports go by default) for a checkpoint folder (beside it) or a
    model alias (the embedded models: the current folder)."""
    from pruning.loading import ALIASES, resolve_source

    path = Path(target).expanduser()
    if path.is_dir():
        return path, path.name if path.name != "model" else f"{path.parent.name}-model", path.parent
    if target in ALIASES:
        return Path(resolve_source(target)), target, Path.cwd()
    raise ExportError(f"{target} is not a checkpoint folder (from prune or a search run) or a model alias")


def run_export(args) -> int:
    started = time.perf_counter()
    folder, name, default_dir = checkpoint_dir(args.target)
    if args.format == "decilm":
        from deploy.decilm_export import write_decilm

        out = Path(args.out) if args.out else default_dir / f"{name}-decilm"
        with err_console.status("DeciLM export ..."):
            cost = write_decilm(folder, out)
        console.print(f"DeciLM / nemotron-nas checkpoint: {out}  (vLLM: --trust-remote-code)")
        if cost["query_heads_stored"] > cost["query_heads_real"] or cost["kv_heads_stored"] > cost["kv_heads_real"]:
            console.print(f"padding: {cost['query_heads_stored'] - cost['query_heads_real']} zero query heads and "
                          f"{cost['kv_heads_stored'] - cost['kv_heads_real']} zero KV heads added (exact; attention runs "
                          f"at {cost['query_heads_stored']} heads instead of {cost['query_heads_real']})")
    else:
        quants = parse_quants(args.quant)
        targets = gguf_targets(folder, name, quants, args.out, default_dir)
        rows = export_gguf(folder, name, targets, progress_bar, say=err_console.print)
        for row in rows:
            console.print(f"{row['type']:<7} {row['bytes'] / 1e6:9.1f} MB  {row['file']}")
        console.print("run it: python main.py serve FILE.gguf  |  llama-server -m FILE.gguf  |  "
                      "python main.py eval FILE.gguf")
    console.print(f"done in {time.perf_counter() - started:.0f} s")
    return 0
