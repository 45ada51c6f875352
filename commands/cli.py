"""The command line: every subcommand's options (the run options generated from RunConfig) and the
dispatch, shared by `python main.py` in the repository and the installed `self-pruner` script.
Known bad input becomes one `error:` line and exit 2; anything else keeps its traceback."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

EXIT_USAGE = 2
COMMANDS = {  # subcommand -> (module, function(args) -> exit code); none: the search
    "prune": ("commands.prune", "run_prune"), "plan": ("commands.plan", "run_plan"),
    "runs": ("commands.runs", "run_list"), "replay": ("commands.runs", "run_replay"),
    "ablate": ("commands.ablate", "run_ablate"), "export": ("commands.export", "run_export"),
    "serve": ("commands.serve", "run_serve"), "eval": ("commands.evaluate", "run_eval"),
    "completion": ("commands.completion", "run_completion"),
}
EXAMPLES = """examples:
  main.py                                         the quick preset: embedded model, local agent, rate 0.2
  main.py --model llama-2-70b --budget 35b        search a 35B plan for LLaMA-2-70B
  main.py --config run.yaml --seed 1              options from a file, one changed
  main.py --resume runs/<run-id>                  continue a killed or interrupted run
  main.py plan --model llama-2-70b --budget 35b   what a run needs, before any weight is read
  main.py prune --model M --rate 0.3              one allocation, no search
  main.py export runs/<run-id>/model              GGUF for llama.cpp (--format decilm: vLLM)
  main.py serve FILE.gguf --api-key KEY           an OpenAI-compatible endpoint
  main.py completion bash                         shell completion: eval "$(self-pruner completion bash)"

each subcommand has its own --help."""


def _program() -> str:
    return "self-pruner" if Path(sys.argv[0]).name == "self-pruner" else "main.py"


def build_parser() -> argparse.ArgumentParser:
    from assembly.config import add_options  # every run setting, its default and its help: RunConfig

    parser = argparse.ArgumentParser(prog=_program(), description="Self-Pruner: structured pruning of LLaMA-family models.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    add_options(parser, "model", "budget", "pruning", "agent", "search", "evolution", "workers", "finalize")
    parser.add_argument("--resume", default=None, metavar="RUN", help="continue the run with this id or folder")
    parser.add_argument("--version", action="version", version=f"self-pruner {package_version()}")
    config_options(parser)
    sub = parser.add_subparsers(dest="command")

    prune = sub.add_parser("prune", help="prune once with a fixed allocation (no search) and save the checkpoint")
    add_options(prune, "model", "budget", "pruning")
    config_options(prune)
    prune.add_argument("--allocation", default="uniform",
                       help="uniform, owl, flap, llm-pruner (first and last layers whole), a genome JSON file, or a comma list of per-layer rates")
    prune.add_argument("--owl-lambda", type=float, default=0.08, help="OWL: rates spread over [-lambda, +lambda]")
    prune.add_argument("--owl-threshold", type=float, default=5.0, help="OWL: outlier = score above this x the mean")
    prune.add_argument("--eval-seqlen", type=int, default=512, help="WikiText-2 test window length")
    prune.add_argument("--eval-windows", type=int, default=0, help="WikiText-2 test windows to score (0 = all)")
    prune.add_argument("--no-eval", action="store_true", help="skip the perplexity comparison")
    prune.add_argument("--export", default="", metavar="SPEC",
                       help="also export the checkpoint: comma list of gguf (f16), gguf:bf16, gguf:q8_0, gguf:q4_k_m, decilm")
    prune.add_argument("--out", default=None, help="checkpoint directory (default runs/prune-<time>/model)")

    plan = sub.add_parser("plan", help="what a run needs, from the config alone: sizes, plan, memory per stage, placement, time")
    add_options(plan, "model", "budget", "pruning", "evolution")
    config_options(plan)
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
    add_options(ablate, "model", "budget", "pruning", "agent", "evolution")
    config_options(ablate)
    ablate.add_argument("--arms", default=None,
                        help="comma list of arms (default: all of: llm, classic, random, llm-init, prompts:no-importance, "
                             "prompts:no-history, prompts:diverse, prompts:moves, cma); also ngopt, ng:<optimizer>, "
                             "prompts:<set or folder>; suffix @module for module granularity")
    ablate.add_argument("--seeds", default="0,1,2", help="comma list of seeds, one run per arm and seed")
    ablate.add_argument("--out", default=None, help="ablation folder (default runs/ablation-<time>); rerun with the same "
                                                   "folder to resume: finished cells are kept")
    ablate.add_argument("--report-only", action="store_true", help="only rebuild the comparison from the finished cells")

    evaluate = sub.add_parser("eval", help="evaluate any model: WikiText-2 test perplexity, zero-shot, timing")
    evaluate.add_argument("target", metavar="MODEL", help="pruned checkpoint, HF directory or id, alias, or FILE.gguf (through llama.cpp)")
    evaluate.add_argument("--dtype", default="auto")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--max-memory", default=None, metavar="SPEC", help="as for the search, e.g. 0=70GiB,cpu=200GiB")
    evaluate.add_argument("--offload-folder", default="offload", metavar="DIR", help="disk offload folder if needed")
    evaluate.add_argument("--data-dir", default=None, help="folder with the task files (and wikitext-2-raw/)")
    evaluate.add_argument("--tasks", default=None, help="comma list of zero-shot tasks, or 'none' (default: all seven; "
                                                        "none for a GGUF)")
    evaluate.add_argument("--limit", type=int, default=0, help="documents per task (0 = all)")
    evaluate.add_argument("--eval-seqlen", type=int, default=512)
    evaluate.add_argument("--eval-windows", type=int, default=0, help="WikiText-2 test windows (0 = all)")
    evaluate.add_argument("--timing", action="store_true", help="also time prefill and decode (a GGUF: in llama.cpp)")
    evaluate.add_argument("--kl-base", default=None, metavar="MODEL",
                          help="also KL divergence per token to this reference model and top-1 agreement with it "
                               "(as llama.cpp's perplexity --kl-divergence); `source`: the model a pruned checkpoint "
                               "came from (its pruning.json). Checkpoints only")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")

    export = sub.add_parser("export", help="write a checkpoint for another runtime: GGUF (llama.cpp) or DeciLM (vLLM)")
    export.add_argument("target", metavar="MODEL", help="checkpoint folder (from prune or a search run) or model alias")
    export.add_argument("--format", choices=("gguf", "decilm"), default="gguf",
                        help="gguf: llama.cpp and runtimes built on it; decilm: vLLM's DeciLMForCausalLM (default gguf)")
    export.add_argument("--quant", default="f16", help="GGUF types, comma list of f16, bf16, q8_0, q4_k_m (default f16)")
    export.add_argument("--out", default=None, help="FILE.gguf (one type) or folder; DeciLM: folder "
                                                     "(default: beside the checkpoint, <name>-<type>.gguf / <name>-decilm)")

    completion = sub.add_parser("completion", help="print a shell completion script: eval \"$(self-pruner completion bash)\"")
    completion.add_argument("shell", choices=["bash"], help="the shell (bash)")

    serve = sub.add_parser("serve", help="an OpenAI-compatible endpoint of a model through llama.cpp's server")
    serve.add_argument("target", metavar="MODEL", help="FILE.gguf, or a checkpoint folder or alias (exported first)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--quant", default="f16", help="GGUF type when exporting a checkpoint (default f16)")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (default: up to 4)")
    serve.add_argument("--ctx", type=int, default=None, help="context in tokens per slot (default: the model's, "
                                                             "4096-8192)")
    serve.add_argument("--parallel", type=int, default=1, metavar="N",
                       help="requests served at once (llama.cpp slots, batched together; each gets --ctx)")
    serve.add_argument("--api-key", default=None, metavar="KEY",
                       help="requests must carry `Authorization: Bearer KEY` (default: $SELF_PRUNER_API_KEY); required "
                            "with a --host other than loopback unless --no-api-key")
    serve.add_argument("--no-api-key", action="store_true",
                       help="serve a non-loopback --host without a key (anyone who reaches the port can use it)")
    serve.add_argument("--alias", default=None, metavar="NAME",
                       help="model name clients see in /v1/models (default: the GGUF's file name, not its local path)")
    serve.add_argument("--gpu-layers", type=int, default=-1, metavar="N",
                       help="layers offloaded to a GPU by a CUDA build of llama.cpp (-1: llama.cpp's default, all)")
    return parser


OUR_PACKAGES = {"agents", "assembly", "commands", "deploy", "distributed", "evaluation", "experiments", "graphs",
                "pruning", "store", "tools", "ui", "main", "__main__"}


def raised_by_us(err: BaseException) -> bool:
    """Was the error raised in our own code (a check of the user's input), not inside a library? A
    ValueError from deep inside torch or transformers is a bug to report with its traceback, not
    "bad input"."""
    tb, module = err.__traceback__, None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        tb = tb.tb_next
    return module is None or module.split(".")[0] in OUR_PACKAGES


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("self-pruner")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="options from a YAML file (names as on the command line; flags given here win); "
                             "every run folder holds its own as config.yaml")
    parser.add_argument("--print-config", action="store_true",
                        help="print the options this command would run with, as a config file, and exit")


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """argv parsed over the --config file's values (flags win over the file, the file over defaults);
    also the file's keys this command does not take."""
    from assembly.config_file import apply_config_file, read_config_file

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args, []
    ignored = apply_config_file(command_parser(parser, args.command), read_config_file(path), path)
    return parser.parse_args(argv), ignored  # a subcommand's parser applies its own defaults


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser that holds `command`'s options (the top one for the search)."""
    return subcommands(parser)[command] if command else parser


def print_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from assembly.config import FIELD_NAMES, RunConfig
    from assembly.config_file import config_yaml

    names = {a.dest for a in command_parser(parser, args.command)._actions if a.dest in FIELD_NAMES}
    print(config_yaml(RunConfig.from_args(args), names), end="")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own bars, not one per weight file
    parser = build_parser()
    from ui.console import fail

    from assembly.config_file import ConfigFileError

    try:
        args, ignored = parse_with_config(parser, argv)
    except ConfigFileError as err:
        fail(str(err))
        return EXIT_USAGE
    if ignored:
        print(f"--config: not options of this command, ignored: {', '.join(ignored)}", file=sys.stderr)
    if getattr(args, "print_config", False):
        print_config(args, parser)
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    try:
        module, function = COMMANDS.get(args.command, ("commands.search", "run_search_command"))
        return getattr(importlib.import_module(module), function)(args)  # imported when used: startup stays fast
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except Exception as err:  # known input errors become one line; bugs keep their traceback
        from commands.errors import USER_ERRORS

        if isinstance(err, USER_ERRORS) and raised_by_us(err) and not os.environ.get("SELF_PRUNER_DEBUG"):
            fail(str(err))
            return EXIT_USAGE
        raise  # a bug, ours or a library's: the traceback, exit 1
