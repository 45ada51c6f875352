"""Self-Pruner command line.

    python main.py prune --model smollm2-135m --rate 0.2 --out pruned/   # one-shot allocation
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_USAGE = 2


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="alias (smollm2-135m = embedded, llama-2-7b, llama-2-70b, llama-3-8b, ...), HF id or directory")
    p.add_argument("--dtype", default="auto", help="auto (bf16 where fast, the CPU included), float32, bfloat16, float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (cuda spreads big models with accelerate)")
    p.add_argument("--data-dir", default=None,
                   help="folder with wikitext-2-raw/ and c4/ (default: $SELF_PRUNER_DATA_DIR, bundled WikiText-2, hub)")


def add_budget_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--budget", help="size of the result: 35b, 7.5B, 800m, 50%%, 0.5 (share of the dense total)")
    group.add_argument("--rate", type=float, help="average per-layer pruning rate (share of decoder-block params removed)")


def add_pruning_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default="wanda-sp", choices=["wanda-sp", "flap", "magnitude"], help="importance metric")
    p.add_argument("--granularity", default="layer", choices=["layer", "module"],
                   help="genome: one rate per layer (paper), or attention + MLP rates per layer")
    p.add_argument("--gqa", default="query", choices=["query", "group"],
                   help="attention unit: one query head per KV group (default) or whole KV groups")
    p.add_argument("--mlp-unit", type=int, default=0, help="MLP channels removed in multiples of this (0 = automatic)")
    p.add_argument("--min-rate", type=float, default=0.0, help="lower bound of every rate")
    p.add_argument("--max-rate", type=float, default=0.9, help="upper bound of every rate")
    p.add_argument("--bias-compensation", default="auto", choices=["auto", "on", "off"],
                   help="FLAP's baseline bias for removed inputs (auto: on with --metric flap)")
    p.add_argument("--calib-data", default="wikitext2", help="wikitext2 (validation split), c4, or a text file")
    p.add_argument("--calib-samples", type=int, default=64, help="calibration windows")
    p.add_argument("--calib-seqlen", type=int, default=512, help="calibration window length in tokens")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Self-Pruner: structured pruning of LLaMA-family models.")
    sub = parser.add_subparsers(dest="command")

    prune = sub.add_parser("prune", help="prune once with a fixed allocation (no search) and save the checkpoint")
    add_model_args(prune)
    add_budget_args(prune)
    add_pruning_args(prune)
    prune.add_argument("--allocation", default="uniform",
                       help="uniform, owl, flap, a genome JSON file, or a comma list of per-layer rates")
    prune.add_argument("--owl-lambda", type=float, default=0.08, help="OWL: rates spread over [-lambda, +lambda]")
    prune.add_argument("--owl-threshold", type=float, default=5.0, help="OWL: outlier = score above this x the mean")
    prune.add_argument("--eval-seqlen", type=int, default=512, help="WikiText-2 test window length")
    prune.add_argument("--eval-windows", type=int, default=0, help="WikiText-2 test windows to score (0 = all)")
    prune.add_argument("--no-eval", action="store_true", help="skip the perplexity comparison")
    prune.add_argument("--export-decilm", action="store_true",
                       help="also write a DeciLM/nemotron-nas checkpoint (vLLM) when the plan keeps all query heads")
    prune.add_argument("--out", default=None, help="checkpoint directory (default runs/prune-<time>/model)")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own bars, not one per weight file
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from transformers.utils import logging as hf_logging

    from ui.console import fail

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    try:
        if args.command == "prune":
            from commands.prune import run_prune

            return run_prune(args)
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except Exception as err:  # known input errors become one line; bugs keep their traceback
        from commands.errors import USER_ERRORS

        if isinstance(err, USER_ERRORS) and not os.environ.get("SELF_PRUNER_DEBUG"):
            fail(str(err))
            return EXIT_USAGE
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
