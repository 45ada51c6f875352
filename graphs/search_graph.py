"""The search graph, readable in one screen (each step: graphs/nodes.py):

    initialize -> screen -> survive -+-> select -> vary -> screen -> survive ...
                                     +-> finalize (after --generations, or --patience stale ones)
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from graphs.nodes import SearchDeps, make_nodes
from graphs.state import SearchState


def build_search_graph(deps: SearchDeps, checkpoint_path: str | Path | None = None):
    nodes = make_nodes(deps)
    graph = StateGraph(SearchState)
    for name, fn in nodes.items():
        graph.add_node(name, fn)
    graph.add_edge(START, "initialize")
    graph.add_edge("initialize", "screen")
    graph.add_edge("screen", "survive")
    graph.add_conditional_edges("survive", lambda state: "finalize" if state["done"] else "select",
                                {"finalize": "finalize", "select": "select"})
    graph.add_edge("select", "vary")
    graph.add_edge("vary", "screen")
    graph.add_edge("finalize", END)
    checkpointer = None
    if checkpoint_path is not None:
        connection = sqlite3.connect(str(checkpoint_path), check_same_thread=False)
        checkpointer = SqliteSaver(connection)
    return graph.compile(checkpointer=checkpointer)


def run_config(run_id: str, generations: int) -> dict:
    # Each generation is 4 node steps; leave room for the initial ones and finalize.
    return {"configurable": {"thread_id": run_id}, "recursion_limit": 10 + 6 * (generations + 2)}
