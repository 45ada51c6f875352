"""Fitness evaluations on Ray actors, with our own bookkeeping (RESEARCH-ray.md's design).

One actor per worker holds its own dense model (loaded once) and scores plans; only a plan (a few
hundred integers) travels to it and two numbers come back. The coordinator keeps the graph, the
agents and `run.db`; `run` hands a stage's jobs to idle workers and drives `ray.wait` over the
pending refs, with a map ref -> (worker, job, dispatch row). Not `ray.util.ActorPool`: a developer
API that does not say which value was lost when an actor dies.

A worker that dies (killed, OOM-killed by Ray's memory monitor, its node lost) surfaces as a
`RayActorError` on its pending call within milliseconds; its job goes back to the front of the
queue with one more attempt (a plan that has killed `max_attempts` workers is recorded as failed,
with the worst score, never retried forever), the death is recorded, and a replacement actor is
started while the replacement allowance lasts. An exception inside an evaluation (a bug, CUDA out
of memory) is raised here as it would be in process: what was scored is recorded, the run resumes.

Actors are created with `max_restarts=0`: a restart would reload the model silently inside Ray,
and a restarted actor's in-flight call fails anyway (`ActorUnavailableError`), so we restart
ourselves, recorded. `close` kills the actors and shuts down a cluster this process started (a
cluster it joined keeps running); it runs on normal exit, errors and Ctrl-C alike.
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from distributed.worker import FitnessWorker
from evaluation.jobs import Job, Outcome

ROOT = Path(__file__).resolve().parent.parent  # where our packages are: on the workers' import path
POLL_SECONDS = 1.0  # ray.wait's timeout: the loop stays responsive to Ctrl-C (never a blocking wait)
OBJECT_STORE_BYTES = 512 * 2**20  # plans and scores are kilobytes; Ray's default takes 30% of RAM


class RayUnavailableError(ValueError):
    """--workers / --ray-address without Ray installed."""


class WorkersLostError(RuntimeError):
    """Every worker died and none could be replaced: what was scored is recorded, the run resumes."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailableError("--workers and --ray-address need Ray, which is not installed: "
                                  "pip install 'self-pruner[ray]' (or bash install.sh --ray), or drop --workers") from None
    return ray


def check_worker_options(config) -> None:
    """--workers / --ray-address / --gpus-per-worker / --cpus-per-worker, before anything is loaded."""
    check_counts(config.workers, config.gpus_per_worker or 0.0, config.cpus_per_worker)
    import_ray()


def check_counts(workers: int | None, gpus_per_worker: float, cpus_per_worker: int) -> None:
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be >= 0, not {gpus_per_worker}")
    if cpus_per_worker < 1:
        raise ValueError(f"--cpus-per-worker must be at least 1, not {cpus_per_worker}")


@dataclass
class _Pending:
    worker: str
    job: Job
    dispatch: int | None
    started: float
    killed: bool = False  # over --eval-timeout: its worker was killed


class RayEvaluatorPool:
    """`workers` evaluator actors on a local cluster started here (`address=None`) or on the cluster at
    `address` (`workers=None` there: one per GPU, or per `gpus_per_worker` GPUs, the cluster offers).
    `build` runs inside each actor and returns its evaluator (anything with
    `compute(plan, generation, stage_index, stage) -> (value, seconds)`)."""

    def __init__(self, build: Callable, workers: int | None, *, address: str | None = None, gpus_per_worker: float = 0.0,
                 cpus_per_worker: int = 1, store=None, max_attempts: int = 3, replacements: int | None = None,
                 start_timeout: float = 1800.0, eval_timeout: float = 0.0, log: Callable[[str], None] = print):
        """eval_timeout: seconds one evaluation may take before its worker is killed as hung (0: no limit);
        the plan is then re-queued like a dead worker's."""
        check_counts(workers, gpus_per_worker, cpus_per_worker)
        self.ray = import_ray()
        self.build, self.size, self.address = build, workers, address
        self.gpus, self.cpus = gpus_per_worker, cpus_per_worker
        self.store, self.max_attempts, self.log = store, max_attempts, log
        self.replacements = replacements  # None: as many as there are workers
        self.start_timeout, self.eval_timeout = start_timeout, eval_timeout
        self.actors: dict[str, object] = {}
        self.info: dict[str, dict] = {}
        self.started_cluster = False
        self._serial = 0

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> "RayEvaluatorPool":
        ray = self.ray
        if ray.is_initialized():
            raise RuntimeError("Ray is already initialised in this process: one evaluator pool per process")
        if self.address is None:
            # a fresh local cluster, never a bare ray.init() (it joins any cluster it finds); our packages
            # first on the workers' path (an older installed copy must not shadow them)
            # (set for the processes ray.init starts, which pass it on to the workers; then put back, so that
            # nothing else this process starts later inherits it)
            before = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in (before or "").split(os.pathsep) if p])
            try:
                ray.init(address="local", num_cpus=max(os.cpu_count() or 1, self.size * self.cpus),
                         object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            finally:
                if before is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = before
            self.started_cluster = True
        else:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        try:
            if self.size is None:
                gpus = self.ray.cluster_resources().get("GPU", 0.0)
                self.size = max(1, int(gpus // self.gpus)) if self.gpus else 1
            self.replacements_left = self.size if self.replacements is None else self.replacements
            self._check_room()
            names = [self._spawn() for _ in range(self.size)]
            self._wait_ready(names)
        except BaseException:
            self.close()
            raise
        return self

    def _check_room(self) -> None:
        room = self.ray.cluster_resources()
        gpus, cpus = room.get("GPU", 0.0), room.get("CPU", 0.0)
        if self.gpus and self.size * self.gpus > gpus + 1e-9:
            raise ValueError(f"{self.size} workers x {self.gpus:g} GPUs need {self.size * self.gpus:g} GPUs; the Ray "
                             f"cluster has {gpus:g}: lower --workers, or share GPUs (--gpus-per-worker 0.5)")
        if self.size * self.cpus > cpus + 1e-9:
            raise ValueError(f"{self.size} workers x {self.cpus} CPUs need {self.size * self.cpus} CPUs; the Ray "
                             f"cluster has {cpus:g}: lower --workers or --cpus-per-worker")

    def _spawn(self) -> str:
        name = f"w{self._serial}"
        self._serial += 1
        actor_class = self.ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0,
                                      max_task_retries=0)(FitnessWorker)
        self.actors[name] = actor_class.remote(self.build, self.cpus)
        return name

    def _wait_ready(self, names: list[str]) -> None:
        """Every actor built its evaluator (the model loads once, here): their facts recorded."""
        refs = {self.actors[n].info.remote(): n for n in names}
        deadline = time.monotonic() + self.start_timeout
        while refs:
            ready, _ = self.ray.wait(list(refs), num_returns=1, timeout=POLL_SECONDS)
            if not ready and time.monotonic() > deadline:
                raise WorkersLostError(f"{len(refs)} of {len(names)} Ray workers not ready after {self.start_timeout:.0f} s "
                                       f"(the cluster has no room for them, or loading is slower): see Ray's logs")
            for ref in ready:
                name = refs.pop(ref)
                try:
                    self.info[name] = self.ray.get(ref)
                except self.ray.exceptions.RayError as err:
                    self._event(name, "init-failed", _first_line(err))
                    raise WorkersLostError(f"Ray worker {name} could not build its evaluator: {_first_line(err)}") from None
                self._event(name, "started", self.info[name])

    def close(self) -> None:
        """Kill our actors; shut down the cluster if we started it (a joined cluster keeps running)."""
        ray = self.ray
        if not ray.is_initialized():
            return
        for actor in self.actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already dead
                pass
        self.actors.clear()
        if self.started_cluster and _accepts_wait(ray.shutdown):
            ray.shutdown(wait_for_processes=True)  # no Ray process outlives the run
        else:
            ray.shutdown()  # a joined cluster: disconnect only

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- evaluations ---------------------------------------------------------------------------
    def compute_on_each(self, plan: list, generation: int, stage_index: int, stage) -> dict[str, float]:
        """One plan scored on every worker (the start-up agreement check)."""
        refs = {self.actors[n].evaluate.remote(plan, generation, stage_index, stage): n for n in self.actors}
        return {refs[ref]: value for ref, (value, _) in zip(refs, self.ray.get(list(refs)))}

    def run(self, jobs: list[Job], on_result: Callable[[Job, Outcome], None]) -> None:
        """Every job scored (or given up) once, on whichever worker is free; on_result as each arrives."""
        ray = self.ray
        queue = deque(jobs)
        pending: dict[object, _Pending] = {}
        idle = deque(self.actors)
        while queue or pending:
            while queue and idle:
                name, job = idle.popleft(), queue.popleft()
                ref = self.actors[name].evaluate.remote(job.plan, job.generation, job.stage_index, job.stage,
                                                        job.evaluator)
                dispatch = self.store.record_dispatch(job.key, job.kind, name, job.attempt) if self.store else None
                pending[ref] = _Pending(name, job, dispatch, time.perf_counter())
            if not pending:
                raise WorkersLostError(f"every Ray worker died and none could be replaced; {len(queue)} plans of this "
                                       f"stage were not scored (recorded: worker_events in run.db). What was scored "
                                       f"is kept: resume the run")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            self._kill_hung(pending)  # their calls fail at the next wait: handled as deaths below
            for ref in ready:
                p = pending.pop(ref)
                try:
                    value, seconds = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as err:
                    self._finish(p, "lost", _first_line(err))
                    replacement = self._lost(p.worker, err)
                    if replacement:
                        idle.append(replacement)
                    init_failed = getattr(err, "actor_init_failed", False)
                    job = p.job if init_failed else replace(p.job, attempt=p.job.attempt + 1)
                    if job.attempt < self.max_attempts:
                        queue.appendleft(job)  # its plan next, on another worker
                    else:
                        reason = f"{job.attempt} workers died evaluating this plan; recorded as the worst score"
                        self.log(f"plan {job.key}: {reason}")
                        on_result(job, Outcome(math.inf, 0.0, None, failed=reason))
                    continue
                except ray.exceptions.RayTaskError as err:
                    self._finish(p, "error", _first_line(err))
                    raise err.as_instanceof_cause() from None  # as in process: the run stops, resumable
                self._finish(p, "done")
                idle.append(p.worker)
                on_result(p.job, Outcome(value, seconds, p.worker))

    # -- bookkeeping ---------------------------------------------------------------------------
    def _kill_hung(self, pending: dict) -> None:
        if not self.eval_timeout:
            return
        now = time.perf_counter()
        for p in pending.values():
            if not p.killed and now - p.started > self.eval_timeout and p.worker in self.actors:
                p.killed = True
                self._event(p.worker, "timed-out", f"plan {p.job.key}: over {self.eval_timeout:g} s")
                self.log(f"Ray worker {p.worker}: plan {p.job.key} over {self.eval_timeout:g} s, worker killed")
                self.ray.kill(self.actors[p.worker], no_restart=True)

    def _lost(self, name: str, err) -> str | None:
        """A dead worker: recorded, dropped, replaced while the allowance lasts (not after a failed start)."""
        self.actors.pop(name, None)
        init_failed = getattr(err, "actor_init_failed", False)
        self._event(name, "init-failed" if init_failed else "died", _first_line(err))
        self.log(f"Ray worker {name} {'failed to start' if init_failed else 'died'}: {_first_line(err)}")
        if init_failed:
            self.replacements_left = 0  # a node that cannot build the evaluator would fail again
        if self.replacements_left <= 0 or not self._room_for_one():
            return None
        self.replacements_left -= 1
        replacement = self._spawn()
        self._event(replacement, "replaces", name)
        self.log(f"Ray worker {replacement} replaces {name}")
        return replacement

    def _room_for_one(self, wait: float = 5.0) -> bool:
        """The cluster can place one more worker now (a dead worker's share comes back within moments; a
        lost node's never does, and an actor that cannot be placed would hold its plan forever)."""
        deadline = time.monotonic() + wait
        while True:
            free = self.ray.available_resources()
            if free.get("CPU", 0.0) + 1e-9 >= self.cpus and free.get("GPU", 0.0) + 1e-9 >= self.gpus:
                return True
            if time.monotonic() > deadline:
                self.log("no room on the Ray cluster for a replacement worker: going on with fewer")
                return False
            time.sleep(0.2)

    def _finish(self, p: _Pending, status: str, detail: str = "") -> None:
        if self.store is not None and p.dispatch is not None:
            self.store.finish_dispatch(p.dispatch, status, detail)

    def _event(self, worker: str, event: str, detail) -> None:
        if self.store is not None:
            self.store.record_worker_event(worker, event, detail)

    def pids(self) -> dict[str, int]:
        """Each live worker's process id (tests kill them)."""
        return {name: info["pid"] for name, info in self.info.items() if name in self.actors}


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _accepts_wait(shutdown) -> bool:
    import inspect

    return "wait_for_processes" in inspect.signature(shutdown).parameters
