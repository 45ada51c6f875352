"""`main.py export MODEL --format gguf|decilm`: the checkpoint for llama.cpp or vLLM."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from deploy.checkpoint_reader import CheckpointReader, ExportError
from ui.console import console, err_console, progress_bar

FORMATS = ("gguf", "decilm")


def checkpoint_dir(target: str) -> tuple[Path, str]:
    """(folder, short name) for a checkpoint folder or a model alias (the embedded model)."""
    from pruning.loading import ALIASES, resolve_source

    path = Path(target).expanduser()
    if path.is_dir():
        return path, path.name if path.name != "model" else f"{path.parent.name}-model"
    if target in ALIASES:
        return Path(resolve_source(target)), target
    raise ExportError(f"{target} is not a checkpoint folder (from prune or a search run) or a model alias")


def parse_quants(text: str) -> list[str]:
    from deploy.llamacpp_runtime import QUANT_TYPES

    quants = [q.strip().lower() for q in text.split(",") if q.strip()]
    unknown = [q for q in quants if q not in QUANT_TYPES]
    if unknown or not quants:
        raise ExportError(f"--quant takes a comma list of {', '.join(QUANT_TYPES)}, not {text!r}")
    return quants


def gguf_targets(folder: Path, name: str, quants: list[str], out: str | None, target: str) -> dict[str, Path]:
    if out and out.endswith(".gguf"):
        if len(quants) > 1:
            raise ExportError("--out names one file but --quant asks for several: give a folder instead")
        return {quants[0]: Path(out)}
    where = Path(out) if out else (folder.parent if Path(target).expanduser().is_dir() else Path.cwd())
    return {q: where / f"{name}-{q}.gguf" for q in quants}


def export_gguf(folder: Path, name: str, quants: list[str], targets: dict[str, Path]) -> list[dict]:
    """f16/bf16 are written directly; q8_0/q4_k_m by llama.cpp's own quantizer from a lossless
    base (bf16 for a bf16 checkpoint, else f16), kept only if it was asked for. One row per file."""
    from deploy.gguf_export import write_gguf

    rows = []

    def write(kind: str, path: Path) -> None:
        with progress_bar(f"GGUF {kind}") as progress:
            summary = write_gguf(folder, path, kind, name=name, progress=progress)
        if not rows:
            for note in (summary.tokenizer, *summary.notes):
                err_console.print(f"gguf: {note}")

    for kind in ("f16", "bf16"):
        if kind in targets:
            write(kind, targets[kind])
            rows.append({"file": str(targets[kind]), "type": kind, "bytes": targets[kind].stat().st_size})
    quantized = [q for q in quants if q not in ("f16", "bf16")]
    if quantized:
        from deploy.llamacpp_runtime import quantize

        lossless = "bf16" if CheckpointReader(folder).dtype() == torch.bfloat16 else "f16"
        base = targets.get(lossless) or targets.get("f16") or targets.get("bf16")
        temporary = base is None
        if temporary:
            base = targets[quantized[0]].with_name(f"{name}-{lossless}.base.gguf")
            write(lossless, base)
        try:
            for q in quantized:
                with err_console.status(f"llama.cpp quantize -> {q} ..."):
                    quantize(base, targets[q], q)
                rows.append({"file": str(targets[q]), "type": q, "bytes": targets[q].stat().st_size})
        finally:
            if temporary:
                base.unlink(missing_ok=True)
    return rows


def run_export(args) -> int:
    started = time.perf_counter()
    folder, name = checkpoint_dir(args.target)
    if args.format == "decilm":
        from deploy.decilm_export import write_decilm

        out = Path(args.out) if args.out else folder.with_name(folder.name + "-decilm")
        with err_console.status("DeciLM export ..."):
            cost = write_decilm(folder, out)
        console.print(f"DeciLM / nemotron-nas checkpoint: {out}  (vLLM: --trust-remote-code)")
        if cost["query_heads_stored"] > cost["query_heads_real"] or cost["kv_heads_stored"] > cost["kv_heads_real"]:
            console.print(f"padding: {cost['query_heads_stored'] - cost['query_heads_real']} zero query heads and "
                          f"{cost['kv_heads_stored'] - cost['kv_heads_real']} zero KV heads added (exact; attention runs "
                          f"at {cost['query_heads_stored']} heads instead of {cost['query_heads_real']})")
    else:
        quants = parse_quants(args.quant)
        rows = export_gguf(folder, name, quants, gguf_targets(folder, name, quants, args.out, args.target))
        for row in rows:
            console.print(f"{row['type']:<7} {row['bytes'] / 1e6:9.1f} MB  {row['file']}")
        console.print("run it: python main.py serve FILE.gguf  |  llama-server -m FILE.gguf  |  "
                      "python main.py eval FILE.gguf")
    console.print(f"done in {time.perf_counter() - started:.0f} s")
    return 0
