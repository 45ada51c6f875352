"""The LLM's part of a generation on the real local server (issue 22): the crosser's and the mutator's
calls one after the other vs at once (two server slots), and the embedded model's tool calls.

Short searches on the embedded model with the run's defaults (the search's own pieces, no
finalize): `--generations` generations with every role an LLM's, once with `--agent-slots 1`
(serial), once with 2 (concurrent), and once with the mutator's tools on. From run.db: per
generation, the wall time from the first crosser/mutator call's start to the last one's end;
the tool calls, and how many were valid.

    python benchmarks/agent_calls.py --data-dir ../shared/data --generations 3
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.chat import make_backend  # noqa: E402
from agents.prompting import PromptSet  # noqa: E402
from agents.roles import make_roles  # noqa: E402
from assembly.build import build_search, prepare_run  # noqa: E402
from assembly.config import RunConfig  # noqa: E402
from benchmarks.common import RESULTS, machine  # noqa: E402
from graphs.runner import run_search  # noqa: E402
from store.run_store import RunStore  # noqa: E402
from tools.search_tools import SearchTools  # noqa: E402


def vary_walls(store: RunStore) -> list[float]:
    """Per generation >= 1: first crosser/mutator call start to last end (seconds)."""
    walls = {}
    for call in store.calls():
        if call["role"] not in ("crosser", "mutator") or call["generation"] < 1 or call["backend"] == "classic":
            continue
        start, end = call["created"] - (call["latency_s"] or 0), call["created"]
        low, high = walls.get(call["generation"], (start, end))
        walls[call["generation"]] = (min(low, start), max(high, end))
    return [round(high - low, 2) for _, (low, high) in sorted(walls.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "agent_calls.json"))
    args = parser.parse_args()
    config = RunConfig(rate=0.2, data_dir=args.data_dir, generations=args.generations)
    root = Path(tempfile.mkdtemp(prefix="agent-calls-"))
    prepared = prepare_run(config, root)
    budget = prepared.budget_for()
    rows = []
    for name, slots, tools in (("serial (1 slot)", 1, False), ("concurrent (2 slots)", 2, False),
                               ("concurrent, mutator tools on", 2, True)):
        backend = make_backend("local", seed=0, slots=slots)
        try:
            store = RunStore(root / name.replace(" ", "-") / "run.db")
            store.start_run(name, config.model, budget.description, "local", config.to_dict(), {})
            roles = make_roles(backend, PromptSet.load(config.prompts), retries=config.retries,
                               tool_budget=config.tool_budget if tools else 0)
            deps = build_search(config, prepared.context, budget, prepared.fitness_pool, store, roles)
            deps.parallel_llm = slots > 1
            if tools:
                deps.tools = SearchTools(deps.fitness, deps.settings.stages[0], deps.layer_importance)
            run_search(deps, name, store.path.parent / "checkpoint.db")
        finally:
            backend.close()
        walls = vary_walls(store)
        counts = store.tool_call_counts()
        by_tool = {}
        for call in store.tool_calls():
            entry = by_tool.setdefault(call["tool"], [0, 0])
            entry[0] += 1
            entry[1] += call["valid"]
        rows.append({"arm": name, "vary_llm_wall_s": walls, "mean_s": round(sum(walls) / max(1, len(walls)), 2),
                     "llm_latency_sum_s": round(sum(c["latency_s"] or 0 for c in store.calls()), 1),
                     "outcomes": store.outcome_counts(), **counts, "by_tool": by_tool})
        print(json.dumps(rows[-1]))
    Path(args.out).write_text(json.dumps({"machine": machine(), "generations": args.generations, "rows": rows},
                                         indent=2))


if __name__ == "__main__":
    main()
