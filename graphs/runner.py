"""Run or resume a search graph to completion, streaming node updates to a callback."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from graphs.nodes import SearchDeps
from graphs.search_graph import build_search_graph, run_config


def run_search(deps: SearchDeps, run_id: str, checkpoint_path: str | Path, resume: bool = False,
               on_update: Callable[[str, dict], None] | None = None) -> dict:
    """Returns the final state. With `resume`, continues from the last checkpoint (nothing that
    was evaluated is evaluated again: fitness values come back from the run database)."""
    graph = build_search_graph(deps, checkpoint_path)
    config = run_config(run_id, deps.settings.generations)
    snapshot = graph.get_state(config)
    if resume and snapshot.values and not snapshot.next:
        return snapshot.values  # already finished
    start = None if (resume and snapshot.values) else {}
    for update in graph.stream(start, config, stream_mode="updates"):
        for node, values in update.items():
            if on_update:
                on_update(node, values or {})
    return graph.get_state(config).values
