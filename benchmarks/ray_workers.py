"""Evaluations per minute: in this process vs N Ray workers (issue 21).

The search's own evaluator on the embedded model (or --model), the run's defaults (OBS + refit
table at rate 0.2): `--plans` distinct plans on the budget (the seeds, then exact-move mutants),
scored on one stage sample (`--stage WINDOWSxSEQLEN`), first in this process, then on a local Ray
cluster with each worker count of `--workers`. Start-up (cluster, actors loading the model and the
refit table) is timed apart from the scoring. Scores are compared with the in-process ones.

    python benchmarks/ray_workers.py --data-dir ../shared/data --workers 1,2,1x2 --plans 16 --stage 2x256
    python benchmarks/ray_workers.py --workers 1,2,4 --gpus-per-worker 0.25   # one GPU shared by up to 4 workers
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assembly.build import prepare_reconstruction, prepare_run, seed_plans  # noqa: E402
from assembly.config import RunConfig  # noqa: E402
from benchmarks.common import RESULTS, machine  # noqa: E402
from distributed.ray_pool import RayEvaluatorPool  # noqa: E402
from distributed.worker import EvaluatorSpec  # noqa: E402
from evaluation.fidelity import SampledFitness, parse_stages  # noqa: E402
from pruning.quanta import MoveSpace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--workers", default="1,2,1x2", help="comma list of Ray worker counts (NxT: N workers of T threads)")
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=None,
                        help="GPUs per worker (default: 1 on a CUDA machine, else 0; 0.5: two workers share one GPU)")
    parser.add_argument("--plans", type=int, default=16)
    parser.add_argument("--stage", default="2x256", help="WINDOWSxSEQLEN of the sample every plan is scored on")
    parser.add_argument("--out", default=str(RESULTS / "ray_workers.json"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import torch

    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if torch.cuda.is_available() else 0.0)
    # fp32 on the CPU (no native bf16 here); the run's own default (bf16) on a GPU
    config = RunConfig(model=args.model, rate=args.rate, data_dir=args.data_dir,
                       dtype="auto" if torch.cuda.is_available() else "float32")
    prepared = prepare_run(config, Path(tempfile.mkdtemp(prefix="ray-bench-")))
    context, budget = prepared.context, prepared.budget_for()
    prepare_reconstruction(context, budget)
    moves = MoveSpace(context.space, budget)
    plans = [plan for _, plan in seed_plans(context, budget, moves, context.comparable_scores())]
    rng = random.Random(0)
    while len(plans) < args.plans:
        child, _ = moves.mutate(plans[rng.randrange(4)], rng, 3)
        if child.key() not in {p.key() for p in plans}:
            plans.append(child)
    stage = parse_stages(f"{args.stage}:1")[0]

    def fresh_fitness():
        return SampledFitness(context, prepared.fitness_pool, kind=config.fitness, batch_size=config.batch_size)

    # warm, as in a search after its first generation: every plan's refits solved (and on disk, where the
    # workers read them) and the timed sample's dense top-K made; then the timed pass on another sample
    fresh_fitness().score_many(plans, 1, 0, stage)
    fitness = fresh_fitness()
    fitness.compute(plans[0], 0, 0, stage)
    started = time.perf_counter()
    local = [s.value for s in fitness.score_many(plans, 0, 0, stage)]
    local_s = time.perf_counter() - started
    rows = [{"where": f"in process, {torch.get_num_threads()} threads",
             "start_s": 0.0, "score_s": round(local_s, 2), "per_min": round(60 * len(plans) / local_s, 1)}]
    print(json.dumps(rows[-1]))
    spec = EvaluatorSpec(config=config.to_dict(), budget=budget, stats=context.stats.to_dict(),
                         calibration=context.reconstruction.calibration, pool=prepared.fitness_pool, seed=0)
    for item in args.workers.split(","):
        count, threads = (int(x) for x in item.split("x")) if "x" in item else (int(item), args.cpus_per_worker)
        began = time.perf_counter()
        with RayEvaluatorPool(spec, count, cpus_per_worker=threads, gpus_per_worker=gpus, log=lambda _: None) as pool:
            start_s = time.perf_counter() - began
            warm = fresh_fitness()  # the same warm-up on the workers
            warm.executor = pool
            warm.score_many(plans, 1, 0, stage)
            pool.compute_on_each(plans[0].to_list(), 0, 0, stage)
            remote = fresh_fitness()
            remote.executor = pool
            started = time.perf_counter()
            values = [s.value for s in remote.score_many(plans, 0, 0, stage)]
            score_s = time.perf_counter() - started
        worst = max(abs(a - b) / abs(b) for a, b in zip(values, local))
        rows.append({"where": f"{count} Ray workers x {threads} threads" + (f" x {gpus:g} GPU" if gpus else ""), "start_s": round(start_s, 1),
                     "score_s": round(score_s, 2), "per_min": round(60 * len(plans) / score_s, 1),
                     "max_rel_diff_vs_in_process": worst})
        print(json.dumps(rows[-1]))
    result = {"machine": machine(), "model": args.model, "rate": args.rate, "plans": len(plans), "stage": args.stage,
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
