"""One batch of evaluations, whoever runs them: the cache first, then the rest here or on an executor.

Both evaluators (the stages' `SampledFitness` and the judge's `FitnessEvaluator`) ask for scores the
same way: known plans come from their cache, each missing plan becomes one `Job`, and the jobs are
computed in this process one after another or handed to an executor (distributed/ray_pool.py) that
calls back as each `Outcome` arrives, in any order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Job:
    """One evaluation a search asks for: a plan (its rows) on one (generation, stage) sample, or on the
    judge's fixed windows."""

    index: int
    key: str
    kind: str
    plan: list
    generation: int
    stage_index: int
    stage: object  # evaluation.fidelity.Stage, None for the judge
    attempt: int = 0
    evaluator: str = "stages"  # which of a worker's evaluators: the stages' samples, or the judge's fixed windows


@dataclass
class Outcome:
    """What came back for a job: its score, the seconds it took, who made it (None: this process),
    and why there is no real score (a plan that kept killing its workers: recorded as the worst)."""

    value: float
    seconds: float
    worker: str | None = None
    failed: str | None = None


def evaluate_plans(plans: list, known: Callable[[str], float | None], job: Callable[[int, object], Job],
                   compute: Callable[[Job], tuple[float, float]], record: Callable[[Job, Outcome], None],
                   result: Callable[[float, float, bool], object], executor=None,
                   on_scored: Callable[[int, object], None] | None = None) -> list:
    """Scores of `plans` in their order. known(key): a cached value or None; job(index, plan): the Job
    of a missing plan (one per distinct plan); compute(job): (value, seconds) in this process;
    record(job, outcome): into the cache; result(value, seconds, cached): what is returned;
    on_scored(done, result): as each score is known (done counts them)."""
    results: list = [None] * len(plans)
    waiting: dict[str, list[int]] = {}  # plan key -> the indices that wait for it
    jobs: list[Job] = []
    done = 0

    def deliver(index: int, value) -> None:
        nonlocal done
        results[index] = value
        done += 1
        if on_scored:
            on_scored(done, value)

    for index, plan in enumerate(plans):
        key = plan.key()
        value = known(key)
        if value is not None:
            deliver(index, result(value, 0.0, True))
        else:
            if key not in waiting:
                jobs.append(job(index, plan))
            waiting.setdefault(key, []).append(index)

    def arrived(item: Job, outcome: Outcome) -> None:
        record(item, outcome)
        for index in waiting.pop(item.key, []):
            deliver(index, result(outcome.value, outcome.seconds, False))

    if executor is None:
        for item in jobs:
            arrived(item, Outcome(*compute(item)))
    elif jobs:
        executor.run(jobs, arrived)
    return results
