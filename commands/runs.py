"""`main.py runs` and `main.py replay RUN`."""
from __future__ import annotations

from pathlib import Path

from commands.search import run_dir_for
from store.run_store import RunStore
from ui.console import console
from ui.replay import list_runs, replay


def run_list(args) -> int:
    root = Path(args.root)
    stores = [RunStore(db) for db in sorted(root.glob("*/run.db"))]
    if not stores:
        console.print(f"no runs under {root}/")
        return 0
    list_runs(console, stores)
    return 0


def run_replay(args) -> int:
    store = RunStore(run_dir_for(args.run) / "run.db")
    replay(console, store, generation=args.generation, role=args.role, speed=args.speed, full_prompts=args.full_prompts)
    return 0


