"""Replay a run from its database in the terminal: per generation the population (each genome
as a per-layer sparkline), the agent calls with their outcomes, and the best of each generation.
Reads only; works on a finished, running or killed run."""
from __future__ import annotations

import json
import time

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ui.tables import rates_line

OUTCOME_STYLE = {"used": "green", "repaired": "yellow", "retried": "cyan", "fallback": "red", "invalid": "red",
                 "error": "red"}


def _population_table(store, generation: dict, fitness_kind: str | None, by_key: dict[str, dict]) -> Table:
    keys = json.loads(generation["population"])
    # since multi-fidelity selection: each survivor's score at the last stage it reached, on that generation's sample
    stated = json.loads(generation.get("population_fitness") or "null")
    table = Table(title=f"generation {generation['generation']}: population (best first)", expand=False)
    for col in ("#", "fitness", "params", "origin", "parents", "rates per layer"):
        table.add_column(col, justify="right" if col in ("#", "fitness", "params") else "left")
    for i, key in enumerate(keys):
        cand = by_key.get(key)
        if cand is None:
            continue
        if stated is not None:
            fitness = stated[i][0]
        else:
            fitness = store.cached(key, fitness_kind) if fitness_kind else None
        parents = ", ".join(p[:6] for p in json.loads(cand["parents"] or "[]"))
        table.add_row(str(i), "-" if fitness is None else f"{fitness:.3f}", f"{cand['total_params'] / 1e6:.2f}M",
                      cand["origin"], parents, rates_line(json.loads(cand["genome"])))
    return table


def _calls_table(calls: list[dict], full_prompts: bool) -> Table:
    table = Table(title="agent calls", expand=False)
    for col in ("role", "try", "outcome", "latency", "tokens", "notes / error", "answer"):
        table.add_column(col)
    for call in calls:
        notes = call["error"] or ", ".join(json.loads(call["notes"] or "[]"))
        raw = (call["raw"] or "")
        transport = call.get("transport_retries") or 0  # requests the client repeated (429, 5xx, connection)
        attempt = f"{call['attempt']}" + (f" (+{transport} transport)" if transport else "")
        table.add_row(call["role"], attempt, Text(call["outcome"], style=OUTCOME_STYLE.get(call["outcome"], "")),
                      f"{call['latency_s'] or 0:.1f}s", f"{(call['prompt_tokens'] or 0) + (call['completion_tokens'] or 0)}",
                      notes[:80], raw if full_prompts else raw[:60])
    return table


def _tool_calls_table(calls: list[dict], full: bool) -> Table:
    """The tools the roles called before answering (agents/tool_loop.py), in order."""
    table = Table(title="tool calls", expand=False)
    for col in ("role", "tool", "arguments", "result / error", "seconds"):
        table.add_column(col)
    for call in calls:
        said = call["result"] if call["valid"] else Text(f"error: {call['error']}", style="red")
        if not full and isinstance(said, str):
            said = said[:70]
        table.add_row(call["role"], call["tool"], (call["arguments"] or "") if full else (call["arguments"] or "")[:50],
                      said, f"{call['seconds'] or 0:.2f}")
    return table


def replay(console, store, generation: int | None = None, role: str | None = None, speed: float = 0.5,
           full_prompts: bool = False) -> None:
    run = store.run() or {}
    console.print(Panel(f"run {run.get('id', '?')}  model {run.get('model', '?')}  {run.get('budget', '')}  "
                        f"agent {run.get('agent', '?')}  status {run.get('status', '?')}", title="Self-Pruner replay"))
    kinds = store.fitness_kinds()
    fitness_kind = kinds[0] if kinds else None
    generations = store.generations()
    calls = store.calls(role)
    by_key: dict[str, dict] = {}  # first record of each plan (read once, not per generation)
    for cand in store.candidates():
        by_key.setdefault(cand["plan_key"], cand)
    best_so_far = []
    gens_seen = sorted({g["generation"] for g in generations} | {c["generation"] for c in calls})
    for gen in gens_seen:
        if generation is not None and gen != generation:
            continue
        gen_calls = [c for c in calls if c["generation"] == gen]
        if gen_calls:
            console.print(_calls_table(gen_calls, full_prompts))
            tool_calls = [t for t in store.tool_calls(gen) if role is None or t["role"] == role]
            if tool_calls:
                console.print(_tool_calls_table(tool_calls, full_prompts))
            if full_prompts:
                for call in gen_calls:
                    console.print(Panel(call["prompt"] or "", title=f"{call['role']} prompt (try {call['attempt']})"))
        row = next((g for g in generations if g["generation"] == gen), None)
        if row is not None:
            console.print(_population_table(store, row, fitness_kind, by_key))
            best_so_far.append(row["best"])
            console.print(f"best so far: {row['best']:.4f}   mean {row['mean']:.4f}   diversity {row['diversity']:.4f}")
        else:
            console.print(f"generation {gen}: not finished (run {run.get('status', '?')})")
        if speed > 0:
            time.sleep(speed)
    if best_so_far:
        console.print("best per generation (each on its own sample): " + " -> ".join(f"{b:.3f}" for b in best_so_far))


def list_runs(console, stores: list) -> None:
    table = Table(title="runs")
    for col in ("id", "model", "budget", "agent", "status", "best fitness", "evaluations", "date"):
        table.add_column(col)
    for store in stores:
        run = store.run()
        if not run:
            continue
        evaluations = store.evaluation_count()
        best = run.get("best_fitness")
        if best is None:
            gens = store.generations()
            best = min((g["best"] for g in gens), default=None)
        table.add_row(run["id"], run["model"], run["budget"], run["agent"], run["status"],
                      "-" if best is None else f"{best:.4f}", str(evaluations),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(run["created"])))
    console.print(table)
