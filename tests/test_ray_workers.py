"""Fitness evaluations on Ray workers (distributed/): real local Ray clusters with two single-thread
actors on the tiny random Llama, real SIGKILLs. Skipped where Ray is not installed (`.[ray]`)."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray
psutil = pytest.importorskip("psutil")

from agents.roles import classic_roles  # noqa: E402
from distributed.ray_pool import RayEvaluatorPool  # noqa: E402
from evaluation.fidelity import Stage  # noqa: E402
from graphs.runner import run_search  # noqa: E402
from pruning.genome import PruningPlan  # noqa: E402
from store.run_store import RunStore  # noqa: E402
from tests.search_fixtures import TinyEvaluator, tiny_fitness, tiny_judge, tiny_search_deps  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STAGE = Stage(2, 32, 2)
PLANS = [PruningPlan.from_list([[i % 3, (i // 3) % 2]] * 4) for i in range(6)]  # six distinct plans


def ray_processes() -> set[int]:
    """This user's Ray processes (raylet, gcs_server, workers, agents), by pid."""
    found = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline", "uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != os.getuid():
                continue
            text = " ".join([proc.info["name"] or ""] + (proc.info["cmdline"] or []))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "ray::" in text or "raylet" in text or "gcs_server" in text or "/ray/" in text:
            found.add(proc.info["pid"])
    return found


def survivors(before: set[int], wait: float = 15.0) -> set[int]:
    deadline = time.monotonic() + wait
    while (left := ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.25)
    return left


@pytest.fixture
def no_ray_left(monkeypatch):
    """Token auth off (no ~/.ray/auth_token); after the test, no Ray process it started is alive."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    before = ray_processes()
    yield before
    left = survivors(before)
    for pid in left:  # clean up for the next test, then fail
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"Ray processes survived the run: {sorted(left)}"


def quiet(_line: str) -> None:
    pass


def evaluations(run_dir: Path) -> dict[tuple[str, str], float]:
    with sqlite3.connect(run_dir / "run.db") as db:
        return {(k, kind): v for k, kind, v in db.execute("select plan_key, kind, value from evaluations")}


def test_two_workers_give_the_fitness_of_one_process(tmp_path, no_ray_left):
    """Every stage's scores and the champion's (the judge's fixed windows) on two workers equal the
    in-process ones, and so does the search's outcome."""
    deps = tiny_search_deps(tmp_path / "one", classic_roles())
    deps.judge = tiny_judge(deps.fitness.context, deps.store)
    one = run_search(deps, "test", tmp_path / "one" / "checkpoint.db")
    deps = tiny_search_deps(tmp_path / "two", classic_roles())
    deps.judge = tiny_judge(deps.fitness.context, deps.store)
    with RayEvaluatorPool(TinyEvaluator(judge=True), 2, store=deps.store, log=quiet) as pool:
        deps.fitness.executor = deps.judge.executor = pool
        two = run_search(deps, "test", tmp_path / "two" / "checkpoint.db")
    in_process, on_workers = evaluations(tmp_path / "one"), evaluations(tmp_path / "two")
    assert in_process.keys() == on_workers.keys()
    for key, value in in_process.items():
        assert on_workers[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert two["best"]["plan_key"] == one["best"]["plan_key"] and two["best_history"] == pytest.approx(one["best_history"])
    assert any(kind.startswith("fitness:") for _, kind in on_workers)  # the champion's scores are there too
    by_worker = deps.store.evaluations_by_worker()
    assert set(by_worker) == {"w0", "w1"} and min(by_worker.values()) >= 3  # both workers took a share, nothing here
    assert {e["event"] for e in deps.store.worker_events()} == {"started"}
    assert all(d["status"] == "done" for d in deps.store.dispatches())


def test_a_worker_killed_mid_stage_loses_nothing(tmp_path, no_ray_left):
    store = RunStore(tmp_path / "run.db")
    fitness = tiny_fitness(store=store)
    with RayEvaluatorPool(TinyEvaluator(delay=1.5), 2, store=store, log=quiet) as pool:
        fitness.executor = pool
        victim = pool.pids()["w0"]
        killer = threading.Timer(0.75, os.kill, (victim, signal.SIGKILL))  # w0 is then inside its first plan
        killer.start()
        results = fitness.score_many(PLANS, 0, 0, STAGE)
        killer.join()
    expected = tiny_fitness()
    for plan, result in zip(PLANS, results):
        assert result.value == pytest.approx(expected.compute(plan, 0, 0, STAGE)[0], rel=1e-6)
    rows = list(store.db.query("select plan_key, worker from evaluations"))
    assert sorted(r["plan_key"] for r in rows) == sorted(p.key() for p in PLANS)  # each plan scored once
    events = [(e["worker"], e["event"]) for e in store.worker_events()]
    assert ("w0", "died") in events and ("w2", "replaces") in events
    lost = [d for d in store.dispatches() if d["status"] == "lost"]
    assert len(lost) == 1 and lost[0]["worker"] == "w0"
    again = [d for d in store.dispatches() if d["plan_key"] == lost[0]["plan_key"] and d["status"] == "done"]
    assert len(again) == 1 and again[0]["worker"] != "w0" and again[0]["attempt"] == 1
    assert "w0" not in {r["worker"] for r in rows}


def test_a_plan_that_kills_its_workers_is_given_up(tmp_path, no_ray_left):
    store = RunStore(tmp_path / "run.db")
    fitness = tiny_fitness(store=store)
    poison = PLANS[2].key()
    with RayEvaluatorPool(TinyEvaluator(poison=poison), 2, store=store, max_attempts=2, log=quiet) as pool:
        fitness.executor = pool
        results = fitness.score_many(PLANS, 0, 0, STAGE)
    assert results[2].value == float("inf")
    assert all(r.value < float("inf") for i, r in enumerate(results) if i != 2)
    row = next(store.db.query("select metrics from evaluations where plan_key = ?", [poison]))
    assert "workers died" in json.loads(row["metrics"])["failed"]
    assert [e["event"] for e in store.worker_events()].count("died") == 2  # two attempts, then given up


def test_a_hung_evaluation_is_killed_and_given_up(tmp_path, no_ray_left):
    store = RunStore(tmp_path / "run.db")
    fitness = tiny_fitness(store=store)
    stall = PLANS[1].key()
    started = time.monotonic()
    with RayEvaluatorPool(TinyEvaluator(stall=stall), 2, store=store, max_attempts=2, eval_timeout=2.0,
                          log=quiet) as pool:
        fitness.executor = pool
        results = fitness.score_many(PLANS, 0, 0, STAGE)
    assert time.monotonic() - started < 50  # not the minute the stalled plan would take, twice
    assert results[1].value == float("inf") and all(r.value < float("inf") for i, r in enumerate(results) if i != 1)
    events = [e["event"] for e in store.worker_events()]
    assert events.count("timed-out") == 2 and events.count("died") == 2


def test_workers_without_ray_installed_is_one_line(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = cli("--workers", "2", "--agent", "classic", "--rate", "0.2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "need Ray" in result.stderr and "self-pruner[ray]" in result.stderr


def _worker(run_dir: Path, mode: str, delay: float) -> subprocess.Popen:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    return subprocess.Popen([sys.executable, "-m", "tests.resume_worker", str(run_dir), mode, str(delay), "2"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_coordinator_resumes_exactly_on_workers(tmp_path, no_ray_left):
    reference = tmp_path / "reference"
    assert subprocess.run([sys.executable, "-m", "tests.resume_worker", str(reference), "fresh", "0"], cwd=REPO,
                          capture_output=True, timeout=300).returncode == 0
    expected = json.loads((reference / "result-fresh.json").read_text())

    killed = tmp_path / "killed"
    process = _worker(killed, "fresh", 0.5)
    deadline = time.monotonic() + 240

    def count() -> int:
        try:
            with sqlite3.connect(killed / "run.db") as db:
                return db.execute("select count(*) from evaluations").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    while count() < 6 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # a SIGKILLed driver takes its cluster down, but two Ray agents outlive it ~60 s: not ours to wait for
    for pid in survivors(no_ray_left, wait=3.0):
        os.kill(pid, signal.SIGKILL)
    before = count()
    assert 6 <= before < expected["evaluations"]

    resumed = _worker(killed, "resume", 0.0)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    result = json.loads((killed / "result-resume.json").read_text())
    assert before + result["evaluations"] == count() == expected["evaluations"]  # nothing twice, nothing lost
    assert result["best"] == expected["best"] and result["history"] == pytest.approx(expected["history"])
    with sqlite3.connect(killed / "run.db") as db:
        statuses = dict(db.execute("select status, count(*) from dispatches group by status").fetchall())
    assert statuses.get("requeued", 0) >= 1 and "running" not in statuses  # the in-flight plans were handed out again


def test_a_worker_that_disagrees_is_refused(tmp_path, no_ray_left):
    from distributed.setup import WorkerDisagreementError, check_agreement
    from pruning.budget import budget_from_args

    store = RunStore(tmp_path / "run.db")
    fitness = tiny_fitness(store=store)  # KL here; the workers score perplexity: another evaluator
    space = fitness.context.space
    budget = budget_from_args(space.shape, None, 0.3, space.min_total_params("layer"))
    with RayEvaluatorPool(TinyEvaluator(kind="ppl"), 2, store=store, log=quiet) as pool:
        with pytest.raises(WorkerDisagreementError, match="disagree"):
            check_agreement(pool, fitness.context, budget, fitness, [STAGE], store, quiet)
    assert [e["event"] for e in store.worker_events()].count("agreement") == 2  # both recorded, then refused


@pytest.mark.integration
def test_search_command_on_two_workers(tmp_path, shared_data_dir, no_ray_left):
    """`main.py --workers 2` on the embedded model: both workers score, agree with the coordinator at
    start-up, the report says where the evaluations ran, and the cluster is gone afterwards."""
    from tests.test_cli import run_cli

    out = tmp_path / "run"
    args = ["--workers", "2", "--agent", "classic", "--rate", "0.2", "--population", "2", "--generations", "1",
            "--offspring", "4", "--fidelity", "1x64:2,2x128:2", "--fitness-tokens", "256", "--fitness-seqlen", "128",
            "--final-eval-windows", "1", "--eval-seqlen", "128", "--calib-samples", "4", "--calib-seqlen", "128",
            "--zero-shot", "off", "--timing", "off", "--save", "off", "--out", str(out)]
    if shared_data_dir:
        args += ["--data-dir", shared_data_dir]
    result = run_cli(*args, env_extra={"SELF_PRUNER_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"},
                     timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Ray workers agree with this process" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    by_worker = summary["workers"]["evaluations"]
    assert by_worker.get("w0", 0) >= 1 and by_worker.get("w1", 0) >= 1
    assert summary["workers"]["events"] == {"started": 2, "agreement": 2}
    assert "evaluations by Ray worker" in (out / "report.md").read_text()
