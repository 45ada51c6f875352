"""`--workers N` / `--ray-address`: the search's evaluator pool, started and checked before the search.

The check: one reference plan (uniform at the budget) scored on the last stage's sample by the
coordinator and by every worker; a worker more than `AGREEMENT_RTOL` apart (another GPU type,
another library version, statistics made differently) stops the run before any score is mixed in.
"""
from __future__ import annotations

from typing import Callable

from distributed.ray_pool import RayEvaluatorPool
from distributed.worker import EvaluatorSpec
from evaluation.fidelity import parse_stages

# relative difference allowed between a worker's score and the coordinator's for the same plan: CPU
# thread counts change summation order (measured: < 1e-6 on SmolLM2-135M); a different model or
# refit table moves scores by percent
AGREEMENT_RTOL = 1e-4


class WorkerDisagreementError(ValueError):
    """A worker scores the reference plan differently from the coordinator."""


def gpus_per_worker(config, context) -> float:
    """--gpus-per-worker, or 1 when the coordinator's model computes on a GPU, else 0."""
    if config.gpus_per_worker is not None:
        return config.gpus_per_worker
    from pruning.placement import input_device

    return 1.0 if input_device(context.model).type == "cuda" else 0.0


def start_fitness_workers(config, context, budget, pool_windows, fitness, store, judge=None,
                          log: Callable[[str], None] = print) -> RayEvaluatorPool:
    """Start the pool, check that every worker agrees with this process, then hand it the search's
    evaluations: the stages' (`fitness`) and the champion's on the fixed windows (`judge`). The caller
    closes it."""
    spec = EvaluatorSpec(config=config.to_dict(), budget=budget, stats=context.stats.to_dict(),
                         calibration=context.reconstruction.calibration, pool=pool_windows, seed=fitness.seed,
                         judge_windows=judge.windows if judge is not None else None)
    gpus = gpus_per_worker(config, context)
    # a joined cluster without --workers: one worker per GPU (group) it offers
    workers = None if config.ray_address is not None and config.workers <= 1 else config.workers
    pool = RayEvaluatorPool(spec, workers, address=config.ray_address, gpus_per_worker=gpus,
                            cpus_per_worker=config.cpus_per_worker, store=store, eval_timeout=config.eval_timeout,
                            log=log)
    pool.start()
    try:
        check_agreement(pool, context, budget, fitness, parse_stages(config.fidelity), store, log)
    except BaseException:
        pool.close()
        raise
    fitness.executor = pool
    if judge is not None:
        judge.executor = pool
    return pool


def check_agreement(pool: RayEvaluatorPool, context, budget, fitness, stages, store, log) -> None:
    index, stage = len(stages) - 1, stages[-1]
    reference = context.uniform_plan(budget)
    expected, _ = fitness.compute(reference, 0, index, stage)
    scores = pool.compute_on_each(reference.to_list(), 0, index, stage)
    worst = max(abs(v - expected) / max(abs(expected), 1e-12) for v in scores.values())
    for name, value in scores.items():
        store.record_worker_event(name, "agreement", {"reference": reference.key(), "stage": stage.label(),
                                                      "coordinator": expected, "worker": value})
    if worst > AGREEMENT_RTOL:
        apart = ", ".join(f"{n}: {v:.6g}" for n, v in scores.items())
        raise WorkerDisagreementError(
            f"Ray workers disagree with this process on the reference plan ({expected:.6g} here; {apart}): "
            f"relative difference {worst:.2e} > {AGREEMENT_RTOL:g}. Same model files, library versions and GPU type "
            f"on every node are needed for comparable scores")
    log(f"{len(scores)} Ray workers agree with this process on the reference plan (largest relative difference "
        f"{worst:.1e}, tolerance {AGREEMENT_RTOL:g})")
