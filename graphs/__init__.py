"""The search as a LangGraph state machine: state, nodes, edges, checkpointer."""
