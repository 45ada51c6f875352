"""Self-Pruner command line, run from the repository: `python main.py ...` (installed: `self-pruner ...`).

    python main.py                                          # quick preset: embedded model, local agent
    python main.py --model llama-2-70b --budget 35b         # the search
    python main.py --resume RUN                             # continue a killed search
    python main.py prune --model M --rate 0.2               # one allocation, no search
    python main.py plan --model llama-2-70b --budget 35b    # what a run needs, before any weight is loaded
    python main.py --config run.yaml                        # options from a file (flags still win)

The parser and the dispatch are in commands/cli.py.
"""
import sys

from commands.cli import EXIT_USAGE, build_parser, main, parse_with_config, raised_by_us  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
