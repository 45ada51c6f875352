"""Benchmark of the pruning engine on the embedded SmolLM2-135M (issue: foundation).

    python benchmarks/pruning_engine.py [--data-dir ../shared/data] [--dtype bfloat16]

Measures: dense WikiText-2 test perplexity (all windows, seqlen 512 and 128); uniform Wanda-sp
and uniform FLAP at average rate 0.2 / 0.35 / 0.5; the time of one fitness evaluation (masked,
and sliced including surgery) against one dense forward over the same tokens; importance
scoring time; peak RSS. Results go to benchmarks/results/pruning_engine.json; finished entries
are skipped when rerun.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import ResultStore, machine, peak_rss_gb, timed  # noqa: E402
from pruning import allocation  # noqa: E402
from pruning.data import load_windows  # noqa: E402
from pruning.loading import load_model  # noqa: E402
from pruning.perplexity import perplexity, sequence_nll  # noqa: E402
from pruning.prepare import PruneSettings, make_budget, prepare  # noqa: E402
from pruning.repair import repair  # noqa: E402

RATES = (0.2, 0.35, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--fitness-windows", type=int, default=8, help="512-token windows per fitness evaluation")
    args = parser.parse_args()
    store = ResultStore("pruning_engine")
    store.put("machine", machine())
    loaded = load_model("smollm2-135m", dtype=args.dtype, device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    store.put("dtype", args.dtype)

    for seqlen in (512, 128):
        key = f"dense_ppl_seqlen{seqlen}"
        if not store.has(key):
            test = load_windows("wikitext2", "test", tok, seqlen, args.data_dir)
            start = time.perf_counter()
            ppl = perplexity(model, test, batch_size=8 if seqlen == 512 else 32)
            store.put(key, {"ppl": ppl, "windows": len(test), "seconds": time.perf_counter() - start})
            print(key, store.data[key], flush=True)

    contexts = {}
    for metric in ("wanda-sp", "flap"):
        # the engine as measured before reconstruction existed: FLAP with its bias, Wanda-sp plain
        settings = PruneSettings(metric=metric, data_dir=args.data_dir, calib_samples=64, calib_seqlen=512, batch_size=8,
                                 reconstruct="bias" if metric == "flap" else "off")
        start = time.perf_counter()
        context, cached = prepare(model, tok, settings)
        if not cached or not store.has("importance_scoring"):
            if not cached:
                store.put("importance_scoring", {"calib_windows": 64, "seqlen": 512,
                                                 "seconds": time.perf_counter() - start, "dtype": args.dtype})
        contexts[metric] = context

    test = load_windows("wikitext2", "test", tok, 512, args.data_dir)
    for metric, context in contexts.items():
        for rate in RATES:
            key = f"uniform_{metric}_rate{rate}"
            if store.has(key):
                continue
            budget = make_budget(context.space, None, rate, "layer")
            result = repair(allocation.uniform(context.space, budget), context.space, budget)
            pruned = context.prune(result.plan)
            start = time.perf_counter()
            ppl = perplexity(pruned, test, batch_size=8)
            store.put(key, {"ppl": ppl, "windows": len(test), "total_params": result.total_params,
                            "block_params": result.block_params, "seconds": time.perf_counter() - start})
            print(key, store.data[key], flush=True)
            del pruned

    # One fitness evaluation = NLL over `fitness_windows` x 512 validation tokens.
    valid = load_windows("wikitext2", "validation", tok, 512, args.data_dir).head(args.fitness_windows).input_ids
    context = contexts["wanda-sp"]
    timing = {"tokens": int(valid.numel()), "dense_forward": timed(lambda: sequence_nll(model, valid))}
    for rate in (0.2, 0.5):
        budget = make_budget(context.space, None, rate, "layer")
        plan = repair(allocation.uniform(context.space, budget), context.space, budget).plan

        def masked_eval():
            with context.masked(plan):
                sequence_nll(model, valid)

        def sliced_eval():
            sequence_nll(context.prune(plan), valid)

        pruned = context.prune(plan)
        timing[f"rate{rate}"] = {
            "masked": timed(masked_eval),
            "sliced_including_surgery": timed(sliced_eval),
            "surgery_only": timed(lambda: context.prune(plan)),
            "sliced_forward_only": timed(lambda: sequence_nll(pruned, valid)),
        }
        for kind in ("masked", "sliced_including_surgery"):
            timing[f"rate{rate}"][kind + "_vs_dense"] = (
                timing[f"rate{rate}"][kind]["median_s"] / timing["dense_forward"]["median_s"])
    store.put("fitness_timing", timing)
    store.put("peak_rss_gb", peak_rss_gb())
    print(store.data["fitness_timing"], store.data["peak_rss_gb"], flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
