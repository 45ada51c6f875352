"""Structured pruning engine: loading, importance, budgets, masks, surgery, checkpoints.

Nothing here imports agents, graphs or LangChain (DESIGN.md: dependencies point one way).
"""
