"""The embedded model, dense and pruned, in llama.cpp: is the GGUF faithful, and how fast is it?

For dense and each pruned plan (the headline's searched `self-pruner llm (layer)` plans at rates
0.2 and 0.5, and uniform Wanda-sp at 0.5): export f16 and q8_0 GGUFs, then in llama.cpp measure
WikiText-2 test perplexity on 16 x 512 windows (the transformers tokenizer's ids, so both runtimes
see the same tokens), greedy next-token agreement with the fp32 transformers checkpoint, prompt
tokens/s (one 512-token prompt) and decode tokens/s (64 greedy tokens), best of 3 after a warm-up;
beside PyTorch's own timing of the same checkpoint (bf16, 1 x 512 prefill, 64-token decode).

    python benchmarks/llamacpp_bench.py [--windows 16] [--threads N] [--work DIR]
    python benchmarks/llamacpp_bench.py --work DIR --speed-passes 3   # re-time every GGUF, interleaved
Results: benchmarks/results/llamacpp.json (resumable: finished entries are kept).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import ResultStore, machine  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
MODELS = (("dense", None, None), ("0.2 searched", 0.2, "self-pruner llm (layer)"),
          ("0.5 searched", 0.5, "self-pruner llm (layer)"), ("0.5 uniform wanda-sp", 0.5, "uniform"))


def checkpoint(name: str, rate, method, work: Path) -> Path:
    import main
    from pruning.loading import embedded_model_dir

    if rate is None:
        return embedded_model_dir()
    out = work / name.replace(" ", "-") / "model"
    if (out / "config.json").exists():
        return out
    allocation = "uniform"
    if method != "uniform":
        headline = json.loads((Path(__file__).parent / "results" / "headline.json").read_text())
        allocation = ",".join(str(r) for r in headline[f"{rate}|{method}|ppl"]["rates"])
    data = ["--data-dir", str(SHARED)] if SHARED.is_dir() else []
    code = main.main(["prune", "--model", "smollm2-135m", "--rate", str(rate), "--allocation", allocation,
                      "--no-eval", "--out", str(out), *data])
    assert code == 0
    return out


def measure(folder: Path, name: str, windows, threads: int | None) -> dict:
    from transformers import AutoModelForCausalLM

    from deploy.exports import export_gguf
    from deploy.llamacpp_runtime import LlamaCppModel
    from evaluation.timing import time_model
    from pruning.perplexity import perplexity

    reference = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    params = sum(p.numel() for p in reference.parameters())
    with torch.no_grad():
        greedy = [reference(row[None]).logits[0].argmax(-1).numpy() for row in windows.input_ids]
    result = {"params": params, "transformers_fp32_ppl": perplexity(reference, windows, batch_size=4)}
    del reference
    fast = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.bfloat16).eval()
    torch_timing = time_model(fast, batch_sizes=(1,), seqlens=(512,), decode_tokens=64)
    result["pytorch_bf16"] = {"prefill_tokens_per_s": torch_timing["prefill"]["1x512"]["tokens_per_s"],
                              "decode_tokens_per_s": torch_timing["decode"]["tokens_per_s"]}
    del fast
    targets = {q: folder.parent / f"{name.replace(' ', '-')}-{q}.gguf" for q in ("f16", "q8_0")}
    export_gguf(folder, name.replace(" ", "-"), targets, say=lambda text: None)
    ids = windows.input_ids.tolist()
    for kind, path in targets.items():
        with LlamaCppModel(path, n_ctx=len(ids[0]), threads=threads) as runtime:
            nll, count, agree = 0.0, 0, []
            for row, expected in zip(ids, greedy):
                a, b, tokens = runtime.window_scores(row)
                nll, count = nll + a, count + b
                agree.append(float((tokens == expected).mean()))
        with LlamaCppModel(path, n_ctx=len(ids[0]) + 64, threads=threads, logits_all=False) as runtime:
            speed = runtime.speed(ids[0], decode_tokens=64)
        result[kind] = {"bytes": path.stat().st_size, "ppl": float(np.exp(nll / count)), "agreement": float(np.mean(agree)),
                        "prompt_tokens_per_s": speed.prompt_tokens_per_s, "decode_tokens_per_s": speed.decode_tokens_per_s,
                        "threads": speed.threads}
        print(f"{name:<22} {kind:<5} ppl {result[kind]['ppl']:9.3f} (transformers fp32 {result['transformers_fp32_ppl']:.3f}) "
              f"agree {result[kind]['agreement']:.3f}  prompt {speed.prompt_tokens_per_s:7.1f} tok/s  "
              f"decode {speed.decode_tokens_per_s:6.1f} tok/s", flush=True)
    return result


def table(data: dict) -> str:
    dense = data["dense"]
    lines = ["| model | params | ideal | runtime | PPL | vs transformers | greedy agree | prompt tok/s | x | decode tok/s | x |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _, _ in MODELS:
        if name not in data:
            continue
        row = data[name]
        ideal = dense["params"] / row["params"]
        pt, dpt = row["pytorch_bf16"], dense["pytorch_bf16"]
        lines.append(f"| {name} | {row['params'] / 1e6:.1f}M | {ideal:.2f} | PyTorch bf16 | {row['transformers_fp32_ppl']:.2f} | "
                     f"(fp32) | - | {pt['prefill_tokens_per_s']:.0f} | {pt['prefill_tokens_per_s'] / dpt['prefill_tokens_per_s']:.2f} | "
                     f"{pt['decode_tokens_per_s']:.1f} | {pt['decode_tokens_per_s'] / dpt['decode_tokens_per_s']:.2f} |")
        for kind in ("f16", "q8_0"):
            r, d = row[kind], dense[kind]
            lines.append(f"| | | | llama.cpp {kind} | {r['ppl']:.2f} | {(r['ppl'] / row['transformers_fp32_ppl'] - 1) * 100:+.2f}% | "
                         f"{r['agreement'] * 100:.1f}% | {r['prompt_tokens_per_s']:.0f} | "
                         f"{r['prompt_tokens_per_s'] / d['prompt_tokens_per_s']:.2f} | {r['decode_tokens_per_s']:.1f} | "
                         f"{r['decode_tokens_per_s'] / d['decode_tokens_per_s']:.2f} |")
    return "\n".join(lines)


def speed_passes(work: Path, passes: int, threads: int | None) -> int:
    """Every GGUF timed `passes` times, model after model within a pass (so drift hits all alike):
    512-token prompt, 128 greedy tokens, best of 5 per pass."""
    from deploy.llamacpp_runtime import LlamaCppModel
    from pruning.loading import embedded_model_dir

    files = {"dense": embedded_model_dir().parent}
    files.update({name: work / name.replace(" ", "-") for name, rate, _ in MODELS if rate is not None})
    store = ResultStore("llamacpp")
    prompt = list(range(1000, 1512))
    runs: dict = {}
    for _ in range(passes):
        for name, folder in files.items():
            for kind in ("f16", "q8_0"):
                path = folder / f"{name.replace(' ', '-')}-{kind}.gguf"
                with LlamaCppModel(path, n_ctx=640, threads=threads, logits_all=False) as runtime:
                    speed = runtime.speed(prompt, decode_tokens=128, repeats=5)
                row = runs.setdefault(f"{name}|{kind}", {"prompt": [], "decode": []})
                row["prompt"].append(speed.prompt_tokens_per_s)
                row["decode"].append(speed.decode_tokens_per_s)
                print(f"{name:<22} {kind:<5} prompt {speed.prompt_tokens_per_s:7.1f}  decode {speed.decode_tokens_per_s:6.1f}",
                      flush=True)
    store.put("speed_passes", runs)
    for name in files:
        for kind in ("f16", "q8_0"):
            r, d = runs[f"{name}|{kind}"], runs[f"dense|{kind}"]
            print(f"{name:<22} {kind:<5} decode x {min(r['decode']) / max(d['decode']):.2f}-{max(r['decode']) / min(d['decode']):.2f}  "
                  f"prompt x {min(r['prompt']) / max(d['prompt']):.2f}-{max(r['prompt']) / min(d['prompt']):.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default=None, help="folder for checkpoints and GGUFs (default: a temporary one)")
    parser.add_argument("--speed-passes", type=int, default=0,
                        help="only re-time the GGUFs already in --work, this many interleaved passes (noise check)")
    args = parser.parse_args()
    if args.speed_passes:
        return speed_passes(Path(args.work), args.speed_passes, args.threads)
    from transformers import AutoTokenizer

    from pruning.data import load_windows
    from pruning.loading import embedded_model_dir

    store = ResultStore("llamacpp")
    store.put("machine", machine())
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    windows = load_windows("wikitext2", "test", tokenizer, 512, str(SHARED) if SHARED.is_dir() else None).head(args.windows)
    work = Path(args.work or tempfile.mkdtemp(prefix="llamacpp-bench-"))
    for name, rate, method in MODELS:
        if not store.has(name):
            store.put(name, measure(checkpoint(name, rate, method, work), name, windows, args.threads))
    print(table(store.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
