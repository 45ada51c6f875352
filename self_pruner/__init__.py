"""Self-Pruner as an installed package: one name, `self_pruner`, in site-packages.

The wheel puts the repository's top-level folders (agents/, tools/, pruning/, graphs/, prompts/, ...:
the layout our users asked for) inside this package, so nothing with a generic name (`agents` is also
OpenAI's Agents SDK) lands at the top of site-packages. Our code imports its parts by their short names
(`from agents.chat import ...`), as it does when run from the repository; the `self-pruner` script
(`main` below) first puts this package's folder at the front of the import path, so inside our process
those names are ours. Importing `self_pruner` from other code does the same, so do it in a process of
its own (as the script does), not beside a library with one of those names.
"""
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
ROOT = _HERE if (_HERE / "agents").is_dir() else _HERE.parent  # installed: here; in a checkout: the repository

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    """The `self-pruner` command (commands/cli.py)."""
    from commands.cli import main as cli

    return cli()
