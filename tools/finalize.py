"""The end of a search: prune the best genome physically, save the checkpoint, and compare it
on WikiText-2 *test* with dense and with uniform Wanda-sp at the same parameter count."""
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
    """The paper's baseline: uniform rates, Wanda-sp scores, no bias compensation."""
    space = replace(context.space, bias_compensation=False)
    scores = context.scores if context.scores.metric == "wanda-sp" else compute_importance(context.model, context.stats, "wanda-sp")
    baseline = PruningContext(context.model, space, context.stats, scores)
    result = repair(allocation.uniform(space, budget, "layer"), space, budget)
    return baseline, result


def finalize_search(best: dict, context: PruningContext, budget: Budget, tokenizer, test: TokenWindows,
                    out_dir: Path, record: dict, batch_size: int = 4, progress_factory=None,
                    zero_shot_options: dict | None = None, timing: bool = False, status=None) -> dict:
    """zero_shot_options: {"data_dir", "limit", "tasks"} to run lm-eval on all three models."""
    started = time.perf_counter()
    plan = PruningPlan.from_list(best["plan"])
    pruned = context.prune(plan)
    save_pruned(pruned, tokenizer, out_dir, {**record, "genome": {"granularity": best["granularity"], "rates": best["rates"]},
                                             "plan": best["plan"], "fitness": best["fitness"],
                                             "params": {"total": best["total_params"], "blocks": best["block_params"]}})
    baseline_context, baseline = uniform_wanda_sp(context, budget)
    rows = {}
    models = {"dense": context.model, "uniform wanda-sp": baseline_context.prune(baseline.plan), "searched": pruned}
    for name, model in models.items():
        if progress_factory:
            with progress_factory(f"test perplexity: {name}") as progress:
                rows[name] = perplexity(model, test, batch_size=batch_size, progress=progress)
        else:
            rows[name] = perplexity(model, test, batch_size=batch_size)
    params = {"dense": budget.dense_params, "uniform wanda-sp": baseline.total_params,
              "searched": best["total_params"], "budget": budget.target_params}
    final = {"checkpoint": str(out_dir), "test_windows": len(test), "test_seqlen": test.seqlen, "ppl": rows,
             "params": params, "uniform_rates": baseline.genome.to_list()}
    if zero_shot_options:
        from tools.zeroshot import zero_shot

        final["zero_shot"] = {}
        for name, model in models.items():
            if status:
                status(f"zero-shot (lm-eval, limit {zero_shot_options.get('limit')}): {name}")
            final["zero_shot"][name] = zero_shot(model, tokenizer, batch_size=batch_size, **zero_shot_options)
    if timing:
        from tools.timing import speedups, time_model

        if status:
            status("timing dense vs searched")
        dense_t, pruned_t = time_model(context.model), time_model(pruned)
        final["timing"] = {"dense": dense_t, "searched": pruned_t,
                           "speedup": speedups(dense_t, pruned_t, budget.dense_params, best["total_params"])}
    final["seconds"] = time.perf_counter() - started
    return final
