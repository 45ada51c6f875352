"""Exports as one step: what to write (`gguf`, `gguf:q8_0`, `decilm`), where, and how the written
GGUF compares with the checkpoint it came from (perplexity on the same token windows, speed)."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from deploy.checkpoint_reader import CheckpointReader, ExportError
from deploy.llamacpp_runtime import QUANT_TYPES

# llama.cpp here runs on the CPU: beyond this size a GGUF's perplexity would take far longer than
# the search itself, so finalize leaves it to `main.py eval FILE.gguf` and says so.
MEASURE_MAX_BYTES = 4 * 10**9


def parse_quants(text: str) -> list[str]:
    quants = [q.strip().lower() for q in text.split(",") if q.strip()]
    unknown = [q for q in quants if q not in QUANT_TYPES]
    if unknown or not quants:
        raise ExportError(f"GGUF types are a comma list of {', '.join(QUANT_TYPES)}, not {text!r}")
    return quants


def parse_export_spec(text: str | None) -> list[tuple[str, str | None]]:
    """'gguf,gguf:q8_0,decilm' -> [('gguf', 'f16'), ('gguf', 'q8_0'), ('decilm', None)]."""
    specs = []
    for item in (text or "").split(","):
        item = item.strip().lower()
        if not item:
            continue
        kind, _, quant = item.partition(":")
        if kind == "gguf":
            specs += [("gguf", q) for q in parse_quants(quant or "f16")]
        elif kind == "decilm" and not quant:
            specs.append(("decilm", None))
        else:
            raise ExportError(f"--export takes a comma list of gguf, gguf:<{'|'.join(QUANT_TYPES)}>, decilm; not {item!r}")
    return specs


def needs_llama_cpp(specs: list[tuple[str, str | None]]) -> bool:
    return any(kind == "gguf" and quant not in ("f16", "bf16") for kind, quant in specs)


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def check_export_spec(text: str | None) -> None:
    """Up front (before any search): a malformed spec, or a quantization without llama.cpp's bindings."""
    specs = parse_export_spec(text)
    if needs_llama_cpp(specs) and not llama_cpp_available():
        raise ExportError("quantized GGUF exports run llama.cpp's quantizer: pip install llama-cpp-python "
                          "(or export gguf / gguf:bf16, which need no bindings)")


def gguf_targets(folder: Path, name: str, quants: list[str], out: str | None, default_dir: Path) -> dict[str, Path]:
    if out and out.endswith(".gguf"):
        if len(quants) > 1:
            raise ExportError("--out names one file but several GGUF types were asked for: give a folder instead")
        return {quants[0]: Path(out)}
    where = Path(out) if out else default_dir
    return {q: where / f"{name}-{q}.gguf" for q in quants}


def export_gguf(folder: Path, name: str, targets: dict[str, Path], progress_factory=None, say=print) -> list[dict]:
    """f16/bf16 are written directly; q8_0/q4_k_m by llama.cpp's own quantizer from a lossless
    base (bf16 for a bf16 checkpoint, else f16), kept only if it was asked for. One row per file."""
    from deploy.gguf_export import write_gguf
    from pruning.checkpoint import check_safetensors

    check_safetensors(folder)  # a truncated shard: one line naming it, before anything is written
    rows: list[dict] = []
    noted = []

    def write(kind: str, path: Path):
        with (progress_factory(f"GGUF {kind}") if progress_factory else nullcontext()) as progress:
            summary = write_gguf(folder, path, kind, name=name, progress=progress)
        if not noted:
            noted.append(1)
            for note in (f"tokenizer {summary.tokenizer}", *summary.notes):
                say(f"gguf: {note}")
        if summary.splits:
            say(f"gguf {kind}: {len(summary.splits)} splits (over 45 GB); llama.cpp loads them from {summary.path.name}")
        return summary

    def row(kind: str, path: Path, splits: tuple[Path, ...] = ()) -> dict:
        files = splits or (path,)
        return {"format": "gguf", "type": kind, "file": str(path), "bytes": sum(f.stat().st_size for f in files),
                **({"splits": [str(f) for f in files]} if splits else {})}

    for kind in ("f16", "bf16"):
        if kind in targets:
            summary = write(kind, targets[kind])
            rows.append(row(kind, summary.path, summary.splits))
    quantized = [q for q in targets if q not in ("f16", "bf16")]
    if quantized:
        from deploy.llamacpp_runtime import quantize

        lossless = "bf16" if CheckpointReader(folder).dtype() == torch.bfloat16 else "f16"
        written = {r["type"]: r for r in rows}
        base_row = written.get(lossless) or written.get("f16") or written.get("bf16")
        temporary = base_row is None
        if temporary:
            summary = write(lossless, targets[quantized[0]].with_name(f"{name}-{lossless}.base.gguf"))
            base_files, base = summary.splits or (summary.path,), summary.path
        else:
            base_files, base = [Path(f) for f in base_row.get("splits", [base_row["file"]])], Path(base_row["file"])
        try:
            for q in quantized:
                say(f"llama.cpp quantize -> {q}")
                quantize(base, targets[q], q)  # a split base is read whole; the quantized file is one file
                rows.append(row(q, targets[q]))
        finally:
            if temporary:
                for path in base_files:
                    Path(path).unlink(missing_ok=True)
    return rows


def export_checkpoint(folder: Path, specs: list[tuple[str, str | None]], name: str, default_dir: Path,
                      progress_factory=None, say=print) -> list[dict]:
    """Every export of one checkpoint, written beside it by default."""
    rows = []
    quants = [quant for kind, quant in specs if kind == "gguf"]
    if quants:
        rows += export_gguf(folder, name, gguf_targets(folder, name, quants, None, default_dir), progress_factory, say)
    if any(kind == "decilm" for kind, _ in specs):
        from deploy.decilm_export import write_decilm

        out = default_dir / f"{name}-decilm"
        say(f"DeciLM export -> {out}")
        cost = write_decilm(folder, out)
        rows.append({"format": "decilm", "type": None, "file": str(out), "padding": cost})
    return rows


TG = 128  # tokens generated for llama-bench's tg128


def measure_gguf(row: dict, windows: torch.Tensor, progress_factory=None) -> dict:
    """Perplexity of a written GGUF on the given token windows (the checkpoint's own test windows,
    so the numbers compare directly) and its speed as llama-bench states it (pp512, tg128), all in
    llama.cpp. llama.cpp maps
    the file (pages the kernel can drop), so this holds no second anonymous copy of the model."""
    from deploy.llamacpp_runtime import LlamaCppModel

    if row["bytes"] > MEASURE_MAX_BYTES:
        return {**row, "note": f"not measured ({row['bytes'] / 1e9:.0f} GB on the CPU): main.py eval FILE.gguf"}

    ids = windows.tolist()
    seqlen = len(ids[0])
    with LlamaCppModel(row["file"], n_ctx=seqlen) as runtime:
        with (progress_factory(f"GGUF {row['type']} perplexity (llama.cpp)") if progress_factory else nullcontext()) as progress:
            ppl = runtime.perplexity(ids, progress=progress)
    pp = min(512, seqlen)  # llama-bench's pp512 where the windows are that long
    with LlamaCppModel(row["file"], n_ctx=max(pp, TG) + 1, logits_all=False) as runtime:
        speed = runtime.bench(ids[0], pp=pp, tg=TG)
    return {**row, "ppl": ppl, "speed": speed}
