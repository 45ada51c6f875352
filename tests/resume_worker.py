"""Runs a tiny classic search in its own process (so a test can SIGKILL it mid-generation).

    python -m tests.resume_worker RUN_DIR fresh|resume SECONDS_PER_EVALUATION [RAY_WORKERS]
"""
import json
import sys
import time
from pathlib import Path

from agents.roles import classic_roles
from graphs.runner import run_search
from tests.search_fixtures import tiny_search_deps


def main() -> None:
    run_dir, mode, delay = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    deps = tiny_search_deps(run_dir, classic_roles(), generations=3)
    masked = deps.fitness.context.masked

    def slow_masked(plan, exact=False):
        time.sleep(delay)  # every uncached score applies its plan once
        return masked(plan, exact)

    deps.fitness.context.masked = slow_masked
    if mode == "resume":  # as the search command does: a killed session's in-flight plans are handed out again
        deps.store.requeue_running()
    pool = None
    if workers > 1:  # the evaluations on a local Ray cluster, each as slow
        from distributed.ray_pool import RayEvaluatorPool
        from tests.search_fixtures import TinyEvaluator

        pool = deps.fitness.executor = RayEvaluatorPool(TinyEvaluator(delay=delay), workers, store=deps.store,
                                                        log=lambda _: None).start()
    try:
        final = run_search(deps, "test", run_dir / "checkpoint.db", resume=(mode == "resume"))
    finally:
        if pool is not None:
            pool.close()
    (run_dir / f"result-{mode}.json").write_text(json.dumps(
        {"evaluations": deps.fitness.evaluations, "history": final["best_history"], "best": final["best"]["plan_key"]}))


if __name__ == "__main__":
    main()
