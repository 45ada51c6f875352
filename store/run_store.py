"""The run database: one SQLite file per run (`runs/<run-id>/run.db`), via sqlite-utils.

Tables: runs, generations, candidates, agent_calls, evaluations. The `evaluations` table is also
the fitness cache: a plan evaluated once is never evaluated again, across kills and resumes.
Nothing here prints; API keys are never written (callers pass sanitised arguments).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import sqlite_utils

SCHEMA = {
    "runs": {"id": str, "created": float, "updated": float, "status": str, "model": str, "budget": str,
             "agent": str, "args": str, "versions": str, "best_fitness": float, "best_key": str},
    "generations": {"generation": int, "best": float, "mean": float, "diversity": float, "wall_s": float,
                    "evaluations": int, "population": str, "created": float},
    "candidates": {"id": int, "plan_key": str, "generation": int, "origin": str, "parents": str,
                   "granularity": str, "genome": str, "plan": str, "total_params": int, "block_params": int,
                   "repair_notes": str, "created": float},
    "agent_calls": {"id": int, "generation": int, "role": str, "backend": str, "prompt_set": str, "attempt": int,
                    "prompt": str, "raw": str, "parsed": str, "notes": str, "outcome": str, "error": str,
                    "latency_s": float, "prompt_tokens": int, "completion_tokens": int, "created": float,
                    "transport_retries": int},
    "evaluations": {"id": int, "plan_key": str, "kind": str, "value": float, "metrics": str, "seconds": float,
                    "created": float, "worker": str},
    # evaluations on Ray workers (distributed/ray_pool.py): each plan handed to a worker, and what became of it
    "dispatches": {"id": int, "plan_key": str, "kind": str, "worker": str, "attempt": int, "status": str,
                   "detail": str, "created": float, "finished": float},
    # the tools LLM roles called before answering (agents/tool_loop.py): arguments, result or error, seconds
    "tool_calls": {"id": int, "generation": int, "role": str, "tool": str, "arguments": str, "result": str,
                   "error": str, "seconds": float, "valid": int, "created": float},
    # the workers' lives: started (pid, node, device), died (why), replaced, refused at the start-up check
    "worker_events": {"id": int, "worker": str, "event": str, "detail": str, "created": float},
}


def _json(value) -> str:
    if is_dataclass(value):
        value = asdict(value)
    return json.dumps(value, default=str)


class RunStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")  # a reader (replay) never blocks the search
        for name, columns in SCHEMA.items():
            pk = "id" if "id" in columns else None
            if name == "generations":
                pk = "generation"
            self.db[name].create(columns, pk=pk, if_not_exists=True)
        for table, column, kind in (("evaluations", "worker", str), ("agent_calls", "transport_retries", int)):
            if column not in self.db[table].columns_dict:  # a run.db made before the column existed
                self.db[table].add_column(column, kind)
        self.db["evaluations"].create_index(["plan_key", "kind"], unique=True, if_not_exists=True)
        self.db["candidates"].create_index(["plan_key"], if_not_exists=True)

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, run_id: str, model: str, budget: str, agent: str, args: dict, versions: dict) -> None:
        now = time.time()
        if self.db["runs"].count_where("id = ?", [run_id]):
            self.db["runs"].update(run_id, {"status": "running", "updated": now})
            return
        self.db["runs"].insert({"id": run_id, "created": now, "updated": now, "status": "running", "model": model,
                                "budget": budget, "agent": agent, "args": _json(args), "versions": _json(versions)})

    def run(self) -> dict | None:
        rows = list(self.db["runs"].rows)
        return rows[0] if rows else None

    def set_status(self, status: str, **fields) -> None:
        run = self.run()
        if run:
            self.db["runs"].update(run["id"], {"status": status, "updated": time.time(), **fields})

    # -- fitness cache ---------------------------------------------------------------------
    def cached(self, plan_key: str, kind: str) -> float | None:
        rows = list(self.db.query("select value from evaluations where plan_key = ? and kind = ?", [plan_key, kind]))
        return rows[0]["value"] if rows else None

    def record_evaluation(self, plan_key: str, kind: str, value: float, metrics: dict | None = None,
                          seconds: float = 0.0, worker: str | None = None) -> None:
        """worker: the Ray worker that made it (None: the search's own process)."""
        self.db.execute(
            "insert or replace into evaluations (plan_key, kind, value, metrics, seconds, created, worker) "
            "values (?,?,?,?,?,?,?)",
            [plan_key, kind, value, _json(metrics or {}), seconds, time.time(), worker],
        )
        self.db.conn.commit()

    # -- workers (distributed/ray_pool.py) ----------------------------------------------------------
    def record_dispatch(self, plan_key: str, kind: str, worker: str, attempt: int) -> int:
        row = self.db["dispatches"].insert({"plan_key": plan_key, "kind": kind, "worker": worker, "attempt": attempt,
                                            "status": "running", "created": time.time()})
        self.db.conn.commit()
        return row.last_pk

    def finish_dispatch(self, dispatch_id: int, status: str, detail: str = "") -> None:
        """status: done, lost (the worker died: re-queued), failed (gave up), error (the evaluation raised)."""
        self.db["dispatches"].update(dispatch_id, {"status": status, "detail": detail, "finished": time.time()})
        self.db.conn.commit()

    def requeue_running(self) -> int:
        """Dispatches left running by a coordinator that was killed: marked re-queued (their plans have no
        score, so the resumed search hands them out again). Returns how many."""
        count = self.db["dispatches"].count_where("status = 'running'")
        if count:
            self.db.execute("update dispatches set status = 'requeued', detail = 'coordinator stopped; resumed', "
                            "finished = ? where status = 'running'", [time.time()])
            self.db.conn.commit()
        return count

    def dispatches(self) -> list[dict]:
        return list(self.db["dispatches"].rows_where(order_by="id"))

    def record_worker_event(self, worker: str, event: str, detail: dict | str = "") -> None:
        self.db["worker_events"].insert({"worker": worker, "event": event,
                                         "detail": detail if isinstance(detail, str) else _json(detail),
                                         "created": time.time()})
        self.db.conn.commit()

    def worker_events(self) -> list[dict]:
        return list(self.db["worker_events"].rows_where(order_by="id"))

    def worker_event_counts(self) -> dict[str, int]:
        return {row["event"]: row["n"] for row in
                self.db.query("select event, count(*) as n from worker_events group by event")}

    def evaluations_by_worker(self) -> dict[str, int]:
        return {row["worker"] or "coordinator": row["n"] for row in
                self.db.query("select worker, count(*) as n from evaluations group by worker")}

    def scored_keys(self, kind_prefix: str) -> set[str]:
        """Plan keys with any evaluation whose kind starts with this prefix (every fidelity stage)."""
        return {row["plan_key"] for row in self.db.query("select distinct plan_key from evaluations where kind like ?",
                                                         [kind_prefix + "%"])}

    def evaluation_count(self, kind: str | None = None) -> int:
        """Evaluations of this fitness kind (all kinds when None)."""
        return self.db["evaluations"].count_where("kind = ?", [kind]) if kind else self.db["evaluations"].count

    def evaluation_values(self, kind: str) -> list[float]:
        """Fitness values of this kind in the order they were made."""
        return [row["value"] for row in self.db.query("select value from evaluations where kind = ? order by id", [kind])]

    def evaluation_seconds(self) -> float:
        return sum(row["seconds"] or 0.0 for row in self.db["evaluations"].rows)

    def fitness_kinds(self) -> list[str]:
        return [row["kind"] for row in self.db.query("select distinct kind from evaluations")]

    # -- candidates, calls, generations ----------------------------------------------------
    def record_candidate(self, candidate: dict) -> None:
        """candidate: plan_key, generation, origin, parents, genome, plan, params, notes."""
        exists = self.db["candidates"].count_where("plan_key = ? and generation = ? and origin = ?",
                                                   [candidate["plan_key"], candidate["generation"], candidate["origin"]])
        if exists:
            return  # a resumed node re-proposes the same candidate: record it once
        self.db["candidates"].insert({
            "plan_key": candidate["plan_key"], "generation": candidate["generation"], "origin": candidate["origin"],
            "parents": _json(candidate.get("parents", [])), "granularity": candidate["granularity"],
            "genome": _json(candidate["rates"]), "plan": _json(candidate["plan"]),
            "total_params": candidate["total_params"], "block_params": candidate["block_params"],
            "repair_notes": _json(candidate.get("notes", [])), "created": time.time(),
        })

    def record_call(self, call: dict) -> None:
        row = {k: call.get(k) for k in SCHEMA["agent_calls"] if k != "id"}
        for key in ("parsed", "notes"):
            if row.get(key) is not None and not isinstance(row[key], str):
                row[key] = _json(row[key])
        row["created"] = time.time()
        self.db["agent_calls"].insert(row)

    def record_tool_call(self, call: dict) -> None:
        self.db["tool_calls"].insert({k: call.get(k) for k in SCHEMA["tool_calls"] if k not in ("id", "created")}
                                     | {"valid": int(bool(call.get("valid"))), "created": time.time()})
        self.db.conn.commit()

    def tool_calls(self, generation: int | None = None) -> list[dict]:
        where = "generation = ?" if generation is not None else None
        return list(self.db["tool_calls"].rows_where(where, [generation] if generation is not None else None,
                                                     order_by="id"))

    def tool_call_counts(self) -> dict:
        rows = list(self.db.query("select count(*) as n, coalesce(sum(valid), 0) as ok from tool_calls"))
        return {"tool_calls": rows[0]["n"], "valid_tool_calls": rows[0]["ok"]}

    def record_generation(self, generation: int, stats: dict, population: list) -> None:
        self.db["generations"].upsert({"generation": generation, **stats, "population": _json(population),
                                       "created": time.time()}, pk="generation", alter=True)

    def record_champion(self, info: dict) -> None:
        """finalize's pick among the archive on the fixed windows (graphs/nodes.py)."""
        run = self.run()
        if run:
            self.db["runs"].update(run["id"], {"champion": _json(info)}, alter=True)

    def champion(self) -> dict | None:
        run = self.run()
        return json.loads(run["champion"]) if run and run.get("champion") else None

    # -- reads -----------------------------------------------------------------------------
    def calls(self, role: str | None = None) -> list[dict]:
        if role:
            return list(self.db["agent_calls"].rows_where("role = ?", [role], order_by="id"))
        return list(self.db["agent_calls"].rows_where(order_by="id"))

    def candidate(self, plan_key: str) -> dict | None:
        """The latest record of one plan."""
        return next(iter(self.db.query("select * from candidates where plan_key = ? order by id desc limit 1",
                                       [plan_key])), None)

    def candidates(self) -> list[dict]:
        return list(self.db["candidates"].rows_where(order_by="id"))

    def generations(self) -> list[dict]:
        return list(self.db["generations"].rows_where(order_by="generation"))

    def outcome_counts(self) -> dict[str, dict[str, int]]:
        """Per role: how many calls ended used / repaired / retried / fallback."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.db.query("select role, outcome, count(*) as n from agent_calls group by role, outcome"):
            counts.setdefault(row["role"], {})[row["outcome"]] = row["n"]
        return counts

    def token_totals(self) -> dict:
        row = next(self.db.query(
            "select count(*) as calls, coalesce(sum(prompt_tokens),0) as prompt, coalesce(sum(completion_tokens),0) as completion,"
            " coalesce(sum(latency_s),0) as latency from agent_calls where backend != 'classic'"))
        return dict(row)
