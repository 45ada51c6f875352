"""Benchmark for zero-shot evaluation and timing (issue: evaluation, timing, report).

    python benchmarks/eval_bench.py --data-dir ../shared/data [--limit 100]

Zero-shot (lm-eval, the seven tasks, offline files) of the dense embedded model and of uniform
Wanda-sp at average rate 0.2, with the time each took; CPU prefill / decode timing of dense vs
uniform Wanda-sp at rate 0.5, with speed-ups beside the ideal (parameter ratio).
Timing runs first (it needs the CPU to itself). Results: benchmarks/results/eval_bench.json
(finished entries are skipped on a rerun).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import ResultStore, machine, uniform_pruned  # noqa: E402
from pruning.loading import load_model  # noqa: E402
from pruning.prepare import PruneSettings, prepare  # noqa: E402
from evaluation.timing import compare_timing  # noqa: E402
from evaluation.zeroshot import TASKS, paper_average, zero_shot  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--limit", type=int, default=100, help="documents per task (0 = all)")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="tasks to run now, in this order (HellaSwag is by far the longest: ~40k requests)")
    args = parser.parse_args()
    store = ResultStore("eval_bench")
    store.put("machine", machine())
    loaded = load_model("smollm2-135m", dtype="bfloat16", device="cpu")
    context, _ = prepare(loaded.model, loaded.tokenizer, PruneSettings(metric="wanda-sp", data_dir=args.data_dir,
                                                                       batch_size=8))

    if not store.has("timing dense vs uniform 0.5"):
        pruned, pruned_params, dense_params = uniform_pruned(context, 0.5)
        store.put("timing dense vs uniform 0.5", compare_timing(loaded.model, pruned, dense_params, pruned_params))
        print(store.data["timing dense vs uniform 0.5"]["speedup"], flush=True)

    # One entry per (model, task) so a killed full run (--limit 0: ~69k requests per model) resumes
    # at the task it was in; the summary entry is written once all seven tasks are in.
    limit = args.limit or None
    for name, rate in (("dense", None), ("uniform wanda-sp 0.2", 0.2)):
        key = f"zero_shot {name} limit {args.limit}"
        if store.has(key):
            continue
        model = loaded.model if rate is None else uniform_pruned(context, rate)[0]
        for task in args.tasks.split(","):
            task_key = f"{key} task {task}"
            if not store.has(task_key):
                store.put(task_key, zero_shot(model, loaded.tokenizer, tasks=[task], data_dir=args.data_dir,
                                              limit=limit, batch_size=8))
                print(task_key, store.data[task_key], flush=True)
        if not all(store.has(f"{key} task {task}") for task in TASKS):
            continue  # the summary waits for all seven
        parts = [store.data[f"{key} task {task}"] for task in TASKS]
        tasks = {task: part["tasks"][task] for task, part in zip(TASKS, parts)}
        store.put(key, {"tasks": tasks, "average": paper_average(tasks), "limit": limit,
                        "seconds": sum(part["seconds"] for part in parts)})
        print(key, store.data[key], flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
