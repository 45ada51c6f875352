"""Self-Pruner command line.

    python main.py                                          # quick preset: embedded model, local agent
    python main.py --model llama-2-70b --budget 35b         # the search
    python main.py --resume RUN                             # continue a killed search
    python main.py prune --model M --rate 0.2               # one allocation, no search
    python main.py plan --model llama-2-70b --budget 35b    # what a run needs, before any weight is loaded
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_USAGE = 2
ZERO_SHOT_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="alias (smollm2-135m = embedded, llama-2-7b, llama-2-70b, llama-3-8b, ...), HF id or directory")
    p.add_argument("--dtype", default="auto", help="auto (bf16 where fast, the CPU included), float32, bfloat16, float16")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda (all visible GPUs), cuda:N (that GPU only)")
    p.add_argument("--max-memory", default=None, metavar="SPEC",
                   help="memory per device in accelerate's form, e.g. 0=70GiB,1=70GiB,cpu=200GiB; what does not fit "
                        "goes to CPU RAM, then disk (default: free GPU memory less 2 GiB, 85%% of free RAM)")
    p.add_argument("--offload-folder", default=None, metavar="DIR",
                   help="disk offload folder when the model does not fit GPU + CPU (default: offload/ in the run folder)")
    p.add_argument("--cpu-heap", default="auto", choices=["auto", "bounded", "glibc"],
                   help="auto: when the model computes on the CPU, freed buffers over 4 MiB go back to the system "
                        "(glibc's mmap threshold fixed: a bounded peak, 10-25%% more CPU time); glibc: its default")
    p.add_argument("--random-weights", action="store_true",
                   help="random weights from the model's config instead of reading them (scale checks, speed before a download)")
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


def add_agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default="local",
                   help="local (llama.cpp server with the embedded SmolLM2), classic (no LLM), openai:<model>, or URL[#model]")
    p.add_argument("--agent-model", default=None, help="GGUF file for --agent local (default: the embedded SmolLM2)")
    p.add_argument("--temperature", type=float, default=1.0, help="LLM sampling temperature")
    p.add_argument("--max-tokens", type=int, default=1024, help="LLM answer limit")
    p.add_argument("--agent-timeout", type=float, default=180.0, help="seconds per LLM call")
    p.add_argument("--retries", type=int, default=1, help="retries (with the error shown) before the classic fallback")


def add_evolution_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=4, help="generations after the initial population")
    p.add_argument("--offspring", type=int, default=8, help="children per generation (half crossover, half mutation)")
    p.add_argument("--fitness", default="ppl", choices=["ppl", "kl"], help="perplexity, or KL divergence to the dense model")
    p.add_argument("--fitness-tokens", type=int, default=2048, help="WikiText-2 validation tokens per fitness evaluation")
    p.add_argument("--fitness-seqlen", type=int, default=512)
    p.add_argument("--fitness-mode", default="auto", choices=["auto", "masked", "sliced"],
                   help="apply candidates as masks on the dense model or by surgery (auto: surgery from rate 0.3)")
    p.add_argument("--final-eval-windows", type=int, default=32, help="WikiText-2 test windows in the final comparison (0 = all)")
    p.add_argument("--eval-seqlen", type=int, default=512)


def add_search_args(p: argparse.ArgumentParser) -> None:
    add_agent_args(p)
    p.add_argument("--prompts", default=None, help="prompt set folder (default prompts/default)")
    p.add_argument("--prompt", action="append", metavar="ROLE=FILE", help="replace one role's prompt (repeatable)")
    p.add_argument("--llm-roles", default="initializer,selector,crosser,mutator",
                   help="roles the LLM plays; the others use classic operators")
    add_evolution_args(p)
    p.add_argument("--patience", type=int, default=0, help="stop after this many generations without improvement (0 = off)")
    p.add_argument("--zero-shot", default="auto", choices=["auto", "on", "off"],
                   help="lm-eval on the seven tasks in finalize (auto: when --data-dir holds them)")
    p.add_argument("--eval-limit", type=int, default=20, help="zero-shot documents per task in finalize (0 = skip)")
    p.add_argument("--timing", default="on", choices=["on", "off"], help="dense vs pruned timing in finalize")
    p.add_argument("--save", default="on", choices=["on", "off"],
                   help="write the pruned checkpoint (off: measure only, e.g. a scale check with too little disk)")
    p.add_argument("--out", default=None, help="run folder (default runs/<run-id>)")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue the run with this id or folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Self-Pruner: structured pruning of LLaMA-family models.")
    add_model_args(parser)
    add_budget_args(parser)
    add_pruning_args(parser)
    add_search_args(parser)
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

    plan = sub.add_parser("plan", help="what a run needs, from the config alone: sizes, plan, memory per stage, placement, time")
    add_model_args(plan)
    add_budget_args(plan)
    add_pruning_args(plan)
    add_evolution_args(plan)
    plan.add_argument("--json", default=None, metavar="FILE", help="also write the estimate as JSON")

    runs = sub.add_parser("runs", help="list runs: id, model, budget, agent, status, best fitness, evaluations, date")
    runs.add_argument("--root", default="runs", help="folder holding run folders")

    replay = sub.add_parser("replay", help="replay a run from its database in the terminal")
    replay.add_argument("run", metavar="RUN", help="run id (under runs/) or run folder")
    replay.add_argument("--generation", type=int, default=None, help="only this generation")
    replay.add_argument("--role", default=None, choices=["initializer", "selector", "crosser", "mutator"])
    replay.add_argument("--speed", type=float, default=0.5, help="seconds between generations (0 = no pauses)")
    replay.add_argument("--full-prompts", action="store_true", help="show every prompt and whole answers")

    ablate = sub.add_parser("ablate", help="does the LLM help? arms x seeds at an equal evaluation budget, compared")
    add_model_args(ablate)
    add_budget_args(ablate)
    add_pruning_args(ablate)
    add_agent_args(ablate)
    add_evolution_args(ablate)
    ablate.add_argument("--arms", default=None,
                        help="comma list of arms (default: all of: llm, classic, random, llm-init, prompts:no-importance, "
                             "prompts:no-history, prompts:diverse, prompts:moves, cma); also ngopt, ng:<optimizer>, "
                             "prompts:<set or folder>; suffix @module for module granularity")
    ablate.add_argument("--seeds", default="0,1,2", help="comma list of seeds, one run per arm and seed")
    ablate.add_argument("--out", default=None, help="ablation folder (default runs/ablation-<time>); rerun with the same "
                                                   "folder to resume: finished cells are kept")
    ablate.add_argument("--report-only", action="store_true", help="only rebuild the comparison from the finished cells")

    evaluate = sub.add_parser("eval", help="evaluate any model: WikiText-2 test perplexity, zero-shot, timing")
    evaluate.add_argument("target", metavar="MODEL", help="pruned checkpoint, HF directory or id, or alias")
    evaluate.add_argument("--dtype", default="auto")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--max-memory", default=None, metavar="SPEC", help="as for the search, e.g. 0=70GiB,cpu=200GiB")
    evaluate.add_argument("--offload-folder", default="offload", metavar="DIR", help="disk offload folder if needed")
    evaluate.add_argument("--data-dir", default=None, help="folder with the task files (and wikitext-2-raw/)")
    evaluate.add_argument("--tasks", default=",".join(ZERO_SHOT_TASKS), help="comma list of zero-shot tasks, or 'none'")
    evaluate.add_argument("--limit", type=int, default=0, help="documents per task (0 = all)")
    evaluate.add_argument("--eval-seqlen", type=int, default=512)
    evaluate.add_argument("--eval-windows", type=int, default=0, help="WikiText-2 test windows (0 = all)")
    evaluate.add_argument("--timing", action="store_true", help="also time prefill and decode")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own bars, not one per weight file
    parser = build_parser()
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    from ui.console import fail

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    try:
        if args.command == "prune":
            from commands.prune import run_prune

            return run_prune(args)
        if args.command == "plan":
            from commands.plan import run_plan

            return run_plan(args)
        if args.command == "runs":
            from commands.runs import run_list

            return run_list(args)
        if args.command == "replay":
            from commands.runs import run_replay

            return run_replay(args)
        if args.command == "ablate":
            from commands.ablate import run_ablate

            return run_ablate(args)
        if args.command == "eval":
            from commands.evaluate import run_eval

            return run_eval(args)
        from commands.search import run_search_command

        return run_search_command(args)
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
