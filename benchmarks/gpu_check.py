"""GPU checks and GPU timing, for a machine with CUDA (CI has none; this is run by hand).

    python benchmarks/gpu_check.py --data-dir ../shared/data [--stages tiny,shape,embedded]
                                   [--shape llama-2-7b] [--zero-shot-limit 0] [--out FILE]

Stages (each result is written as soon as it exists; finished entries are skipped on a rerun):
- tiny: the pruning engine on CUDA with the tiny random Llama. Calibration statistics and
  importance on CUDA agree with CPU; the masked dense model and the physically pruned one give the
  same logits (fp32 and bf16); perplexity agrees with CPU; a pruned checkpoint saved from CUDA
  reloads onto CUDA with the same logits. Two plans: uniform (layer) and one whose layers all differ
  (module granularity). Any mismatch: exit 1.
- shape: speed of structured pruning at full size: a LLaMA-shaped model with random weights
  (pruning and timing need shapes, not trained weights), bf16, dense vs uniform Wanda-sp at rates
  0.2 and 0.5; prefill grid and greedy decode timed with CUDA events; the ideal (parameter ratio)
  beside each speed-up.
- embedded: the embedded SmolLM2-135M on CUDA: WikiText-2 test perplexity (seqlen 512 and 128) of
  dense and uniform Wanda-sp at 0.2 and 0.5, timing dense vs 0.5, zero-shot on the seven tasks for
  dense and uniform 0.2 (full sets by default).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import RESULTS, ResultStore, machine, uniform_pruned  # noqa: E402
from pruning.context import Reconstruction, build_context  # noqa: E402
from pruning.data import TokenWindows, load_windows  # noqa: E402
from pruning.genome import Genome  # noqa: E402
from pruning.perplexity import perplexity  # noqa: E402
from pruning.prepare import PruneSettings, make_budget, make_space  # noqa: E402
from pruning.repair import repair  # noqa: E402
from evaluation.finalize import uniform_wanda_sp  # noqa: E402

DEVICE = "cuda"  # --device; "cpu" only to try this script out on a machine without a GPU
SHAPES = {  # name: (hidden, intermediate, layers, heads, kv_heads, vocab)
    "llama-2-7b": (4096, 11008, 32, 32, 32, 32000),
    "llama-2-13b": (5120, 13824, 40, 40, 40, 32000),
    "llama-3-8b": (4096, 14336, 32, 32, 8, 128256),
    "smoke": (256, 688, 2, 4, 2, 1000),  # to try the stage out on a CPU
}


def context_for(model, windows: TokenWindows):
    """The defaults, least-squares reconstruction included (exact refits, calibrated on `windows`)."""
    settings = PruneSettings(metric="wanda-sp")  # as measured
    context, _ = build_context(model, make_space(model, settings), "wanda-sp", windows, cache_dir=None,
                               batch_size=4, reconstruction=Reconstruction(settings.reconstruct))
    return context


def tiny_plans(context) -> dict:
    """The paper's uniform baseline, and a plan whose layers all differ (heads and MLP widths)."""
    space = context.space
    _, uniform = uniform_wanda_sp(context, make_budget(space, None, 0.5, "layer"))
    mixed = Genome("module", (0.0, 0.5, 0.25, 0.75, 0.6, 0.1, 0.4, 0.2))  # 4 attention rates, then 4 MLP rates
    module_budget = make_budget(space, None, 0.35, "module")
    return {"uniform 0.5 (layer)": uniform.plan, "mixed 0.35 (module)": repair(mixed, space, module_budget).plan}


@torch.inference_mode()
def check_tiny() -> dict:
    """Same results on CUDA as on CPU; raises AssertionError naming the first mismatch."""
    from pruning.hf_modeling import PrunedLlamaForCausalLM
    from pruning.checkpoint import save_pruned
    from tests.tiny import tiny_inputs, tiny_llama

    out = {}
    ids = tiny_inputs(4, 32)
    windows = TokenWindows(tiny_inputs(8, 32, seed=2), "random", "validation")
    cpu_ctx, gpu_ctx = context_for(tiny_llama(), windows), context_for(tiny_llama().to(DEVICE), windows)
    for name, plan in tiny_plans(cpu_ctx).items():
        cpu_sel, gpu_sel = cpu_ctx.selections(plan), gpu_ctx.selections(plan)
        same_selection = all(torch.equal(getattr(a, f).cpu(), getattr(b, f).cpu()) for a, b in zip(cpu_sel, gpu_sel)
                             for f in ("kept_heads", "kept_kv_heads", "kept_channels"))
        with gpu_ctx.masked(plan) as masked:
            masked_logits = masked(ids.to(DEVICE)).logits.float().cpu()
        pruned, cpu_pruned = gpu_ctx.prune(plan), cpu_ctx.prune(plan)
        pruned_logits = pruned(ids.to(DEVICE)).logits.float().cpu()
        cpu_logits = cpu_pruned(ids).logits.float()
        ppl_gpu, ppl_cpu = perplexity(pruned, windows), perplexity(cpu_pruned, windows)
        with tempfile.TemporaryDirectory() as tmp:
            save_pruned(pruned, None, tmp, {"plan": name})
            reloaded = PrunedLlamaForCausalLM.from_pretrained(tmp, device_map=DEVICE, dtype=torch.float32).eval()
            reloaded_logits = reloaded(ids.to(DEVICE)).logits.float().cpu()
        # a copy: the pruned model shares untouched tensors (embeddings) with the dense one
        bf16_logits = copy.deepcopy(pruned).to(torch.bfloat16)(ids.to(DEVICE)).logits.float().cpu()
        row = {
            "same selection cpu vs cuda": same_selection,
            "max |masked - pruned| (cuda fp32)": (masked_logits - pruned_logits).abs().max().item(),
            "max |cpu - cuda| pruned logits": (cpu_logits - pruned_logits).abs().max().item(),
            "max |saved+reloaded - pruned| (cuda)": (reloaded_logits - pruned_logits).abs().max().item(),
            "max |bf16 - fp32| pruned logits (cuda)": (bf16_logits - pruned_logits).abs().max().item(),
            "logit scale (max |fp32|)": pruned_logits.abs().max().item(),
            "perplexity cuda": ppl_gpu, "perplexity cpu": ppl_cpu,
        }
        out[name] = row
        print(name, row, flush=True)
        assert same_selection, f"{name}: CUDA calibration chose other channels/heads than CPU"
        assert row["max |masked - pruned| (cuda fp32)"] < 1e-4, f"{name}: masked and pruned differ on CUDA"
        assert row["max |cpu - cuda| pruned logits"] < 1e-3, f"{name}: CUDA and CPU pruned models differ"
        # eager (tiny config) vs the default attention after reload: float noise, not a difference
        assert row["max |saved+reloaded - pruned| (cuda)"] < 1e-4, f"{name}: reloaded checkpoint differs"
        assert abs(ppl_gpu / ppl_cpu - 1) < 1e-4, f"{name}: perplexity differs between CUDA and CPU"
        assert row["max |bf16 - fp32| pruned logits (cuda)"] < 0.05 * row["logit scale (max |fp32|)"], \
            f"{name}: bf16 pruned model far from fp32"
    return out


def shaped_model(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv, vocab = SHAPES[name]
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(DEVICE):
            model = LlamaForCausalLM(config).eval()  # random weights, built on the GPU directly
    finally:
        torch.set_default_dtype(default)
    return model


def time_shape(name: str, rates=(0.2, 0.5)) -> dict:
    from evaluation.timing import speedups, time_model

    model = shaped_model(name)
    generator = torch.Generator().manual_seed(0)
    windows = TokenWindows(torch.randint(0, model.config.vocab_size, (16, 512), generator=generator), "random",
                           "validation")
    started = time.perf_counter()
    context = context_for(model, windows)
    calibrate_s = time.perf_counter() - started
    grid = dict(batch_sizes=(1, 8), seqlens=(512, 2048), decode_tokens=128, repeats=5, warmup=2)
    if name == "smoke":  # a CPU try-out of the stage: seconds, not a measurement
        grid = dict(batch_sizes=(1, 2), seqlens=(32, 64), decode_tokens=4, repeats=2, warmup=1)
    dense = time_model(model, **grid)
    out = {"shape": name, "dtype": "bfloat16", "calibration_s (16x512 random tokens)": calibrate_s,
           "dense": dense, "grid": {k: list(v) if isinstance(v, tuple) else v for k, v in grid.items()}}
    for rate in rates:
        started = time.perf_counter()
        pruned, params, dense_params = uniform_pruned(context, rate)
        prune_s = time.perf_counter() - started
        timing = time_model(pruned, **grid)
        out[f"uniform {rate}"] = {"params": params, "dense_params": dense_params, "prune_s": prune_s,
                                  "timing": timing, "speedup": speedups(dense, timing, dense_params, params)}
        print(name, rate, out[f"uniform {rate}"]["speedup"], flush=True)
        del pruned
        torch.cuda.empty_cache()
    return out


def embedded_checks(store: ResultStore, data_dir: str, zero_shot_limit: int) -> None:
    from pruning.loading import load_model
    from pruning.prepare import prepare
    from evaluation.timing import compare_timing
    from evaluation.zeroshot import zero_shot

    loaded = load_model("smollm2-135m", dtype="bfloat16", device=DEVICE)
    started = time.perf_counter()
    context, _ = prepare(loaded.model, loaded.tokenizer, PruneSettings(metric="wanda-sp", data_dir=data_dir, batch_size=8))
    store.put("embedded calibration_s", time.perf_counter() - started)
    models, params = {"dense": loaded.model}, {}
    for rate in (0.2, 0.5):
        models[f"uniform wanda-sp {rate}"], params[rate], params["dense"] = uniform_pruned(context, rate)
    if not store.has("embedded wikitext2 test perplexity"):
        rows = {}
        for seqlen in (512, 128):
            windows = load_windows("wikitext2", "test", loaded.tokenizer, seqlen, data_dir)
            rows[str(seqlen)] = {name: perplexity(model, windows, batch_size=16) for name, model in models.items()}
        store.put("embedded wikitext2 test perplexity", rows)
        print(rows, flush=True)
    if not store.has("embedded timing dense vs uniform 0.5"):
        store.put("embedded timing dense vs uniform 0.5",
                  compare_timing(loaded.model, models["uniform wanda-sp 0.5"], params["dense"], params[0.5]))
    for name in ("dense", "uniform wanda-sp 0.2"):
        key = f"embedded zero_shot {name} limit {zero_shot_limit}"
        if not store.has(key):
            result = zero_shot(models[name], loaded.tokenizer, data_dir=data_dir, limit=zero_shot_limit or None,
                               batch_size=64)
            store.put(key, result)
            print(key, result["average"], f"{result['seconds']:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="../shared/data layout (needed by the embedded stage)")
    parser.add_argument("--stages", default="tiny,shape,embedded")
    parser.add_argument("--shape", default="llama-2-7b", choices=sorted(SHAPES))
    parser.add_argument("--zero-shot-limit", type=int, default=0, help="documents per task (0 = all)")
    parser.add_argument("--out", default=str(RESULTS / "gpu_check.json"))
    parser.add_argument("--device", default="cuda", help="cuda (default) or cuda:N; cpu only to try the script out")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; run it where `nvidia-smi` shows a GPU",
              file=sys.stderr)
        return 2
    stages = args.stages.split(",")
    unknown = set(stages) - {"tiny", "shape", "embedded"}
    if unknown or ("embedded" in stages and not args.data_dir):
        parser.error(f"unknown stages {sorted(unknown)}" if unknown else "the embedded stage needs --data-dir")
    out = Path(args.out)
    store = ResultStore(out.stem, out.parent)
    store.put("machine", machine() | {"cuda": torch.version.cuda, "device": DEVICE})
    if "tiny" in stages and not store.has("tiny checks"):
        store.put("tiny checks", check_tiny())
    if "shape" in stages and not store.has(f"timing {args.shape}"):
        store.put(f"timing {args.shape}", time_shape(args.shape))
    if "embedded" in stages:
        embedded_checks(store, args.data_dir, args.zero_shot_limit)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
