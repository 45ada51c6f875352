"""Reconstruction on the embedded SmolLM2-135M: what the refit buys, what it costs, and how far the
search's refit table is from the exact sequential refit.

    python benchmarks/reconstruction.py --data-dir ../shared/data                 # all parts
    python benchmarks/reconstruction.py --data-dir ../shared/data --parts uniform --rates 0.35
    python benchmarks/reconstruction.py --data-dir ../shared/data --model gemma-3-270m --parts uniform --rates 0.2,0.35
    python benchmarks/reconstruction.py ... --refit-only        # no compensation, FLAP's bias, the default refit

Parts (resumable: every result is a key in benchmarks/results/reconstruction.json):
- uniform: WikiText-2 test PPL of uniform plans (Wanda-sp selection) with no compensation, FLAP's
  bias, the least-squares refit calibrated sequentially on pruned inputs reproducing W x (`local`
  target), the same refit calibrated on the dense model's inputs (Týr-the-Pruner's ablation), the
  refit reproducing the dense model's own outputs (`dense` target), and with Hessian-aware
  selection (`--metric obs`) under both targets; seconds and peak RSS of each refit pass;
- table: for plans around the uniform one (random exact-budget moves of 1-6 units between layers,
  what a search proposes), the fitness the search sees (refit table: reference pass along uniform,
  levels solved from its Grams) against the same plan re-fitted exactly; relative error and rank
  correlation.
"""
from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from assembly.build import prepare_run  # noqa: E402
from assembly.config import RunConfig  # noqa: E402
from benchmarks.common import ResultStore, machine  # noqa: E402
from evaluation.fitness import FitnessEvaluator  # noqa: E402
from pruning.context import PruningContext, Reconstruction  # noqa: E402
from pruning.genome import LayerPlan, PruningPlan  # noqa: E402
from pruning.importance import compute_importance  # noqa: E402
from pruning.masking import masked  # noqa: E402
from pruning.perplexity import perplexity  # noqa: E402
from pruning.prepare import make_budget  # noqa: E402
from pruning.refit_pass import SequentialRefit  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def nearby_plans(context: PruningContext, budget, count: int, seed: int) -> list[PruningPlan]:
    """Plans a search would score: from uniform, 1-6 moves of one MLP unit from a layer to another
    (parameter count unchanged), some with an attention unit moved too."""
    rng = random.Random(seed)
    uniform = context.uniform_plan(budget)
    n = len(uniform.layers)
    plans = []
    while len(plans) < count:
        layers = [[p.attn_units_removed, p.mlp_units_removed] for p in uniform.layers]
        for _ in range(rng.randint(1, 6)):
            a, b = rng.sample(range(n), 2)
            step = rng.randint(1, 3)
            if layers[a][1] + step < context.space.mlp_units(a) and layers[b][1] - step >= 0:
                layers[a][1] += step
                layers[b][1] -= step
        if rng.random() < 0.3:  # an attention unit moved, priced back in MLP units
            a, b = rng.sample(range(n), 2)
            if layers[a][0] + 1 < context.space.attn_units(a) and layers[b][0] >= 1:
                layers[a][0] += 1
                layers[b][0] -= 1
        plan = PruningPlan(tuple(LayerPlan(x, y) for x, y in layers))
        if plan.key() != uniform.key() and context.space.total_params(plan) <= budget.target_params + 10_000:
            plans.append(plan)
    return plans


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0] * len(x)
        for rank, i in enumerate(order):
            r[i] = rank
        return r

    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rates", default="0.35,0.2,0.5")
    parser.add_argument("--parts", default="uniform,table")
    parser.add_argument("--plans", type=int, default=8, help="plans per rate in the table part")
    parser.add_argument("--table-rates", default="0.35")
    parser.add_argument("--test-windows", type=int, default=32)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dense-target-rates", default="0.35", help="rates with the dense-target rows (measured worse)")
    parser.add_argument("--refit-only", action="store_true",
                        help="uniform part: no compensation, FLAP's bias and the default refit only (no ablations, no obs)")
    args = parser.parse_args()
    dense_target_rates = [float(x) for x in args.dense_target_rates.split(",") if x]
    torch.set_num_threads(2)
    store = ResultStore("reconstruction" if args.model == "smollm2-135m" else f"reconstruction-{args.model}")
    store.put("machine", machine())
    config = RunConfig(model=args.model, data_dir=args.data_dir, device="cpu", final_eval_windows=args.test_windows,
                       reconstruct="ls")
    prepared = prepare_run(config, Path("/tmp/reconstruction-bench"))
    refit, model = prepared.context, prepared.loaded.model
    store.put("dtype", str(next(model.parameters()).dtype))
    test = prepared.test_windows
    plain = PruningContext(model, replace(refit.space, adds_bias=False), refit.stats, refit.scores)
    flap_bias = PruningContext(model, refit.space, refit.stats, refit.scores, reconstruction=Reconstruction("bias"))
    obs = PruningContext(model, refit.space, refit.stats, compute_importance(model, refit.stats, "obs"),
                         reconstruction=replace(refit.reconstruction))
    r = refit.reconstruction
    if not store.has("dense"):
        store.put("dense", {"ppl": perplexity(model, test)})
    for rate in [float(x) for x in args.rates.split(",")]:
        budget = make_budget(refit.space, None, rate, "layer")
        if "uniform" in args.parts:
            for name, context in (("none", plain), ("bias", flap_bias)):
                key = f"{rate}|uniform|{name}"
                if not store.has(key):
                    b = make_budget(context.space, None, rate, "layer")
                    with context.masked(context.uniform_plan(b)):
                        store.put(key, {"ppl": perplexity(model, test)})
            plan = refit.uniform_plan(budget)
            selections = refit.selections(plan)
            variants = (("refit", True, "local"), ("refit, dense inputs", False, "local"),
                        ("refit, dense target", True, "dense"))
            for name, sequential, target in variants:
                key = f"{rate}|uniform|{name}"
                if store.has(key) or (target == "dense" and rate not in dense_target_rates) or \
                        (args.refit_only and name != "refit"):
                    continue
                started = time.perf_counter()
                refits = SequentialRefit(model, selections, r.calibration, r.damping, r.batch_size, sequential,
                                         target).all()
                seconds = time.perf_counter() - started
                with masked(model, selections, refits=refits):
                    store.put(key, {"ppl": perplexity(model, test), "refit_s": seconds, "peak_rss_gb": peak_rss_gb(),
                                    "calibration": f"{len(r.calibration)} x {r.calibration.seqlen}"})
                print(rate, name, store.data[key], flush=True)
            for target in () if args.refit_only else ("local", "dense"):
                key = f"{rate}|uniform|obs + refit" + (", dense target" if target == "dense" else "")
                if store.has(key) or (target == "dense" and rate not in dense_target_rates):
                    continue
                started = time.perf_counter()
                obs.reconstruction.target = target
                obs.scores = compute_importance(model, refit.stats, "obs")  # pending again: made in the reference pass
                obs.table = None
                obs.prepare_for(budget)  # the reference pass: OBS scores and (uniform) exact refits
                seconds = time.perf_counter() - started
                with obs.masked(obs.uniform_plan(budget), exact=True):
                    store.put(key, {"ppl": perplexity(model, test), "reference_pass_s": seconds})
                print(rate, key, store.data[key], flush=True)
        if "table" in args.parts and str(rate) in args.table_rates.split(","):
            key = f"{rate}|table"
            if store.has(key):
                continue
            started = time.perf_counter()
            refit.prepare_for(budget)
            reference_s = time.perf_counter() - started
            evaluator = FitnessEvaluator(refit, prepared.fitness_windows, kind="ppl", mode="masked")
            rows = []
            for plan in nearby_plans(refit, budget, args.plans, seed=int(rate * 100)):
                t0 = time.perf_counter()
                table = evaluator.evaluate(plan).value
                t1 = time.perf_counter()
                with refit.masked(plan, exact=True) as m:
                    exact = evaluator.score(m)
                t2 = time.perf_counter()
                with masked(model, refit.selections(plan)):
                    unfitted = evaluator.score(model)
                rows.append({"plan": plan.to_list(), "table": table, "exact": exact, "no_refit": unfitted,
                             "table_s": t1 - t0, "exact_s": t2 - t1})
                print(rate, "table", table, "exact", exact, "none", unfitted, flush=True)
            errors = [abs(x["table"] / x["exact"] - 1) for x in rows]
            store.put(key, {"reference_pass_s": reference_s, "rows": rows,
                            "mean_abs_rel_error": sum(errors) / len(errors), "max_abs_rel_error": max(errors),
                            "spearman_table_vs_exact": spearman([x["table"] for x in rows], [x["exact"] for x in rows]),
                            "spearman_no_refit_vs_exact": spearman([x["no_refit"] for x in rows], [x["exact"] for x in rows]),
                            "solves": refit.table.solves})
    print(store.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
