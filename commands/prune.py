"""`main.py prune`: one allocation (uniform / OWL / FLAP / given genome), physical pruning,
a saved checkpoint, and dense vs pruned WikiText-2 test perplexity."""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from assembly.config import RunConfig
from deploy.exports import check_export_spec, export_checkpoint, parse_export_spec
from pruning import allocation
from pruning.budget import format_params
from deploy.model_card import reproduce_command, write_model_card
from pruning.checkpoint import save_pruned
from pruning.data import load_windows
from pruning.importance import OBS_PENDING, wanda_outlier_ratios
from pruning.loading import load_model, load_tokenizer
from pruning.perplexity import perplexity
from pruning.prepare import calibration_windows, make_budget, make_space, prepare
from pruning.repair import repair
from pruning.versions import versions
from assembly.placement_options import offload_folder_for, pruned_offload_folder, ready_machine, show_placement
from ui.console import console, err_console, progress_bar, stage
from ui.tables import comparison_table, rates_line


def _perplexity(name: str, model, test, batch_size: int) -> float:
    with stage(f"perplexity: {name}"), progress_bar(f"perplexity: {name}") as progress:
        return perplexity(model, test, batch_size=batch_size, progress=progress)


def choose_genome(args, context, budget, granularity: str):
    name = args.allocation
    if name == "uniform":
        return allocation.uniform(context.space, budget, granularity)
    if name == "owl":
        ratios = wanda_outlier_ratios(context.model, context.stats, args.owl_threshold)
        return allocation.owl(context.space, budget, ratios, args.owl_lambda)
    if name == "flap":  # sizes compared across layers: with OBS (ranks within a layer), Wanda-sp's scores
        return allocation.flap(context.space, budget, context.comparable_scores())
    if name == "llm-pruner":
        return allocation.llm_pruner(context.space, budget)
    return allocation.genome_from_spec(name, context.space, granularity)


def run_prune(args) -> int:
    settings = RunConfig.from_args(args).prune_settings()
    started = time.perf_counter()
    out = Path(args.out) if args.out else Path("runs") / f"prune-{datetime.now():%Y%m%d-%H%M%S}" / "model"
    # an impossible budget or machine fails here, before any weight is read
    ready_machine(args, settings, offload_folder_for(args, out.parent))
    check_export_spec(args.export)
    with stage("data"):  # text before weights: tokenizing must not stack on the model's memory
        tokenizer = load_tokenizer(args.model, args.random_weights)
        calibration = calibration_windows(tokenizer, settings)
        test = None if args.no_eval else \
            load_windows("wikitext2", "test", tokenizer, args.eval_seqlen, settings.data_dir).head(args.eval_windows or None)
    with stage("loading"), err_console.status(f"loading {args.model} ..."):
        loaded = load_model(args.model, dtype=args.dtype, device=args.device, max_memory=args.max_memory,
                            offload_folder=offload_folder_for(args, out.parent), random_weights=args.random_weights,
                            seed=args.seed, on_placement=show_placement, tokenizer=tokenizer)
    model, tokenizer = loaded.model, loaded.tokenizer
    space = make_space(model, settings)
    budget = make_budget(space, args.budget, args.rate, settings.granularity)
    with stage("calibration"), progress_bar("calibration") as progress:
        context, cached = prepare(model, tokenizer, settings, progress=progress, calibration=calibration)
    if cached:
        err_console.print("importance statistics: read from cache")
    if context.scores.metric == OBS_PENDING:  # Hessian-aware scores come from the reference pass
        with stage("reference pass"), progress_bar("reference pass (obs scores)") as progress:
            context.prepare_for(budget, progress=progress)

    genome = choose_genome(args, context, budget, settings.granularity)
    result = repair(genome, context.space, budget)
    for note in result.notes:
        err_console.print(f"repair: {note}")

    record = {
        "source_model": loaded.name, "source": loaded.source, "budget": budget.to_dict(),
        "allocation": args.allocation, "settings": settings.to_dict(),
        "genome": {"granularity": result.genome.granularity, "rates": result.genome.to_list()},
        "plan": result.plan.to_list(), "repair_notes": result.notes,
        "params": {"total": result.total_params, "blocks": result.block_params,
                   "dense_total": budget.dense_params, "dense_blocks": budget.block_params},
        "versions": versions(),
    }

    rows = [{"name": f"dense {args.model}", "total": budget.dense_params, "blocks": budget.block_params},
            {"name": f"pruned ({args.allocation}, {settings.metric}, reconstruct {settings.reconstruct})",
             "total": result.total_params,
             "blocks": result.block_params}]
    if test is not None:
        rows[0]["ppl"] = _perplexity(rows[0]["name"], model, test, settings.batch_size)
    # The dense model becomes the pruned one layer by layer: never two models in memory.
    label = "pruning in place" + (", re-fitting each layer" if settings.reconstruct == "ls" else "")
    with stage("pruning in place"), progress_bar(label) as progress:
        pruned = context.prune_in_place(result.plan, offload_folder=pruned_offload_folder(loaded), progress=progress)
    del model  # consumed: its layers now belong to `pruned`
    if test is not None:
        rows[1]["ppl"] = _perplexity(rows[1]["name"], pruned, test, settings.batch_size)
        record["wikitext2_test"] = {"seqlen": args.eval_seqlen, "windows": len(test),
                                    "dense_ppl": rows[0]["ppl"], "pruned_ppl": rows[1]["ppl"]}

    with stage("saving"):
        save_pruned(pruned, tokenizer, out, record)
        measured = {}
        if test is not None:
            measured = {"ppl": {"dense": rows[0]["ppl"], "pruned": rows[1]["ppl"]}, "test_windows": len(test),
                        "test_seqlen": args.eval_seqlen,
                        "params": {"dense": budget.dense_params, "pruned": result.total_params}}
        write_model_card(out, record, measured, reproduce_command())
    console.print(comparison_table(f"{args.model} -> {budget.description}", rows))
    console.print(f"per-layer rates: {rates_line(list(result.genome.mlp_rates if settings.granularity == 'module' else result.genome.rates))}")
    console.print(f"realised {format_params(result.total_params)} params (budget {format_params(budget.target_params)}); "
                  f"checkpoint: {out}  (AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True))")
    if args.export:
        with stage("exporting"):
            for row in export_checkpoint(out, parse_export_spec(args.export), name=out.name, default_dir=out.parent,
                                         progress_factory=progress_bar, say=err_console.print):
                console.print(f"export {row['format']} {row.get('type') or ''}: {row['file']}")
    console.print(f"done in {time.perf_counter() - started:.0f} s")
    return 0
