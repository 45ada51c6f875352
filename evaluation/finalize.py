"""The end of a search: compare dense, uniform Wanda-sp, uniform with the run's reconstruction and
the best genome on WikiText-2 *test* (and zero-shot, timing), pruning the dense model in place into
the searched one (re-fitted exactly, layer by layer) and saving it."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from pruning import allocation
from pruning.budget import Budget
from pruning.checkpoint import save_pruned
from pruning.context import PruningContext
from pruning.data import TokenWindows
from pruning.genome import PruningPlan
from pruning.importance import compute_importance
from pruning.perplexity import perplexity
from pruning.repair import repair


def uniform_wanda_sp(context: PruningContext, budget: Budget):
    """The paper's baseline: uniform rates, Wanda-sp scores, no compensation."""
    space = replace(context.space, adds_bias=False)
    scores = context.scores if context.scores.metric == "wanda-sp" else compute_importance(context.model, context.stats, "wanda-sp")
    baseline = PruningContext(context.model, space, context.stats, scores)
    result = repair(allocation.uniform(space, budget, "layer"), space, budget)
    return baseline, result


def uniform_reconstructed(context: PruningContext, budget: Budget):
    """The strongest one-shot baseline: uniform rates with the run's own metric and reconstruction
    (the refit table's reference plan, so its exact refits come free with the table)."""
    return repair(allocation.uniform(context.space, budget, "layer"), context.space, budget)


def reconstructed_name(context: PruningContext) -> str | None:
    mode = context.reconstruction.mode
    return None if mode == "off" else f"uniform {context.scores.metric} + {'refit' if mode == 'ls' else 'bias'}"


def finalize_search(best: dict, context: PruningContext, budget: Budget, tokenizer, test: TokenWindows,
                    out_dir: Path, record: dict, batch_size: int = 4, progress_factory=None,
                    zero_shot_options: dict | None = None, timing: bool = False, status=None,
                    offload_folder: str | None = None, save: bool = True, exports: list | None = None,
                    fitness_of=None) -> dict:
    """Never two models at once: the dense model is measured, uniform Wanda-sp is scored under
    masks (masked == sliced, tested), then the dense model is pruned *in place* into the searched
    one, which is measured, timed and saved. The context is consumed.

    zero_shot_options: {"data_dir", "limit", "tasks"} to run lm-eval on all three models.
    exports: [(format, type)] (deploy/exports.py) written from the saved checkpoint; each GGUF is
    then scored in llama.cpp on the same test windows, and timed there.
    fitness_of: scores a model on the search's fitness windows; the pruned model (exactly re-fitted)
    is scored again, so the report states how far the search's fitness (refit table) was from it.
    """
    started = time.perf_counter()
    say = status or (lambda text: None)
    plan = PruningPlan.from_list(best["plan"])
    baseline_context, baseline = uniform_wanda_sp(context, budget)
    rows, zero = {}, {}
    timings = {}

    def measure(name: str, model) -> None:
        if progress_factory:
            with progress_factory(f"test perplexity: {name}") as progress:
                rows[name] = perplexity(model, test, batch_size=batch_size, progress=progress)
        else:
            say(f"test perplexity: {name}")
            rows[name] = perplexity(model, test, batch_size=batch_size)
        if zero_shot_options:
            from evaluation.zeroshot import zero_shot

            say(f"zero-shot (lm-eval, limit {zero_shot_options.get('limit')}): {name}")
            zero[name] = zero_shot(model, tokenizer, batch_size=batch_size, **zero_shot_options)

    measure("dense", context.model)
    if timing:
        from evaluation.timing import time_model

        say("timing the dense model")
        timings["dense"] = time_model(context.model)
    with baseline_context.masked(baseline.plan) as masked_model:
        measure("uniform wanda-sp", masked_model)
    strongest = reconstructed_name(context)
    if strongest:
        uniform = uniform_reconstructed(context, budget)
        with context.masked(uniform.plan, exact=True) as masked_model:
            measure(strongest, masked_model)
    say("pruning in place, layer by layer" + (" (each layer re-fitted on the pruned model's inputs)"
                                              if context.reconstruction.mode == "ls" else ""))
    if progress_factory:
        with progress_factory("pruning in place") as progress:
            pruned = context.prune_in_place(plan, offload_folder=offload_folder, progress=progress)
    else:
        pruned = context.prune_in_place(plan, offload_folder=offload_folder)
    measure("searched", pruned)
    names = ["dense", "uniform wanda-sp"] + ([strongest] if strongest else []) + ["searched"]
    params = {"dense": budget.dense_params, "uniform wanda-sp": baseline.total_params,
              "searched": best["total_params"], "budget": budget.target_params}
    if strongest:
        params[strongest] = uniform.total_params
    final = {"checkpoint": str(out_dir), "test_windows": len(test), "test_seqlen": test.seqlen,
             "ppl": {name: rows[name] for name in names}, "reconstruct": context.reconstruction.mode,
             "params": params, "uniform_rates": baseline.genome.to_list()}
    if fitness_of is not None:
        # what the search scored (refit table) vs the same plan as finalized (exact sequential refit)
        # the search's own fitness of the plan (with --latency-weight `fitness` is the weighed objective)
        final["fitness"] = {"search": _raw_fitness(best), "final": fitness_of(pruned)}
    if zero:
        final["zero_shot"] = {name: zero[name] for name in names}
    if timing:
        from evaluation.timing import speedups, time_model

        say("timing the searched model")
        timings["searched"] = time_model(pruned)
        final["timing"] = timings | {"speedup": speedups(timings["dense"], timings["searched"], budget.dense_params,
                                                         best["total_params"])}
    if not save:
        final["checkpoint"] = None
        final["seconds"] = time.perf_counter() - started
        return final
    say(f"saving the pruned checkpoint to {out_dir}")
    saved = {**record, "genome": {"granularity": best["granularity"], "rates": best["rates"]},
             "plan": best["plan"], "fitness": _raw_fitness(best),
             **({"objective": best["fitness"], "predicted_latency": best["latency"]}
                if best.get("raw_fitness") is not None else {}),
             "params": {"total": best["total_params"], "blocks": best["block_params"]}}
    save_pruned(pruned, tokenizer, out_dir, saved)
    from deploy.model_card import reproduce_command, write_model_card

    write_model_card(out_dir, saved, final, reproduce_command())  # README.md: the checkpoint's model card
    if exports:
        final["exports"] = export_and_measure(out_dir, exports, test, progress_factory, say)
    final["seconds"] = time.perf_counter() - started
    return final


def export_and_measure(out_dir: Path, exports: list, test: TokenWindows, progress_factory, say) -> list[dict]:
    from deploy.exports import export_checkpoint, llama_cpp_available, measure_gguf

    rows = export_checkpoint(out_dir, exports, name=out_dir.name, default_dir=out_dir.parent,
                             progress_factory=progress_factory, say=say)
    if not llama_cpp_available():
        say("GGUF written; perplexity and speed in llama.cpp need llama-cpp-python")
        return rows
    return [measure_gguf(row, test.input_ids, progress_factory) if row["format"] == "gguf" else row for row in rows]



def _raw_fitness(best: dict) -> float:
    """The search's own fitness of the plan (with --latency-weight `fitness` is the weighed objective)."""
    return best["fitness"] if best.get("raw_fitness") is None else best["raw_fitness"]
