"""Headline benchmark: the paper's main table, on the embedded SmolLM2-135M, with every baseline.

    python benchmarks/headline.py --data-dir ../shared/data            # the full table (hours on 2 CPU cores)
    python benchmarks/headline.py --data-dir ../shared/data --rates 0.2 --seeds 0 --stages ppl
    python benchmarks/headline.py --smoke --out /tmp/headline-smoke     # tiny random Llama, seconds (CI)

For each average pruning rate and method, at the same realised parameter count (every genome is
repaired onto the same budget): parameters (total, blocks), WikiText-2 test perplexity at 512
and 128 tokens, zero-shot accuracy on the seven tasks, CPU prefill / decode speed-up vs dense,
search cost. Methods: dense; uniform Wanda-sp (the paper's baseline); uniform FLAP; FLAP's global
adaptive structure; OWL allocation with Wanda-sp; and the searches, which are ablation cells
(experiments/ablation.py, the same folders `main.py ablate` writes: benchmarks/results/ablation-rate<r>/):
random search, classic evolution, Nevergrad CMA-ES, the local LLM at layer and at module granularity.
Rows named "+ refit" are the same with `--reconstruct ls` (the least-squares refit of o_proj/down_proj,
sequential on pruned inputs; uniform with Hessian-aware `--metric obs` too): one-shot ones re-fitted
exactly, searches scored through the refit table and re-fitted exactly at the end, as `main.py` does
(their cells in benchmarks/results/ablation-rate<r>-refit/).

Resumable at every step: each (rate, method, stage) result is a key in headline.json and each
search seed a cell folder. Stages run rate by rate in order ppl -> timing -> zeroshot, so a run cut
short leaves a usable table. Searches: perplexity of every seed's best (mean ± std); 128-token
perplexity, zero-shot and timing of the best seed (lowest fitness).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from assembly.config import RunConfig  # noqa: E402
from benchmarks.common import RESULTS, ResultStore, machine  # noqa: E402
from commands.prune import choose_genome  # noqa: E402
from experiments.ablation import AblationSetup, parse_arm, run_cell, uniform_reference  # noqa: E402
from pruning.context import PruningContext, Reconstruction  # noqa: E402
from pruning.genome import PruningPlan  # noqa: E402
from pruning.importance import compute_importance  # noqa: E402
from pruning.perplexity import perplexity  # noqa: E402
from pruning.prepare import make_budget  # noqa: E402
from pruning.repair import repair  # noqa: E402
from evaluation.zeroshot import task_score  # noqa: E402

FIXED = ("uniform wanda-sp", "uniform flap", "flap global", "owl wanda-sp",
         "uniform wanda-sp + refit", "owl wanda-sp + refit", "uniform obs + refit", "llm-pruner range + refit",
         "llm-pruner range obs + refit")
SEARCHES = {"random search": "random", "classic evolution": "classic", "cma-es (nevergrad)": "cma",
            "self-pruner llm (layer)": "llm", "self-pruner llm (module)": "llm@module",
            "random search + refit": "random", "classic evolution + refit": "classic",
            "cma-es (nevergrad) + refit": "cma", "self-pruner llm (layer) + refit": "llm",
            "self-pruner (default)": "llm"}
REFIT = " + refit"
DEFAULT_ROW = "self-pruner (default)"  # exactly what `python main.py --rate R` runs (its reconstruction: the refit)


def uses_refit(method: str) -> bool:
    return method.endswith(REFIT) or method == DEFAULT_ROW


def search_metric(bench, method: str) -> str:
    """The default row's metric is the CLI's (`--metric auto`: OBS with the refit); every other search
    row ranks units with Wanda-sp, as it was measured."""
    return bench.cli_defaults.importance_metric if method == DEFAULT_ROW else "wanda-sp"
STAGES = ("ppl", "timing", "zeroshot")


class Bench:
    """The loaded model, its two pruning contexts (Wanda-sp; FLAP with bias compensation) and the windows."""

    def __init__(self, args):
        self.args = args
        self._started_backend = None  # one llama.cpp server for every rate's LLM cells
        if args.smoke:
            self._tiny()
        else:
            self._embedded()
        # One model, one calibration; a context per way of compensating (they share the weights).
        refit, stats = self.refit, self.refit.stats
        plain = replace(refit.space, adds_bias=False)
        self.wanda = PruningContext(self.model, plain, stats, refit.scores)
        self.flap = PruningContext(self.model, replace(plain, adds_bias=True), stats,
                                   compute_importance(self.model, stats, "flap"), reconstruction=Reconstruction("bias"))
        self.obs = PruningContext(self.model, refit.space, stats, compute_importance(self.model, stats, "obs"),
                                  reconstruction=replace(refit.reconstruction))
        for context in (self.refit, self.obs):  # exact refits of the rows' plans, kept between stages
            context.reconstruction.exact_cache = Path(args.out or RESULTS) / "exact-refits"

    def context(self, which: str) -> PruningContext:
        return {"wanda": self.wanda, "flap": self.flap, "refit": self.refit, "obs": self.obs}[which]

    def _embedded(self):
        from agents.chat import make_backend
        from assembly.build import prepare_run
        from main import build_parser
        from pruning.data import load_windows

        a = self.args
        # the CLI's defaults (`main.py ablate --data-dir D`): the cells stay comparable with the command's
        self.cli_defaults = RunConfig.from_args(build_parser().parse_args(["ablate", "--data-dir", a.data_dir or "."]))
        config = replace(self.cli_defaults, device="cpu", data_dir=a.data_dir, final_eval_windows=a.test_windows,
                         reconstruct="ls", metric="wanda-sp")  # the "wanda-sp + refit" rows; OBS has its own context
        prepared = prepare_run(config, Path(a.out) if a.out else RESULTS)
        self.model, self.tokenizer, self.refit = prepared.loaded.model, prepared.loaded.tokenizer, prepared.context
        self.test512, self.fitness, self.pool = prepared.test_windows, prepared.fitness_windows, prepared.fitness_pool
        self.test128 = load_windows("wikitext2", "test", self.tokenizer, 128, a.data_dir).head(4 * a.test_windows)
        self.backend_factory = lambda: make_backend("local")  # the CLI's agent defaults

    def _tiny(self):
        from langchain_core.language_models.fake_chat_models import FakeListChatModel

        from agents.chat import ChatBackend
        from pruning.adapter import DecoderAdapter
        from pruning.data import TokenWindows
        from pruning.importance import collect_activation_stats
        from pruning.space import PruningSpace
        from tests.tiny import tiny_inputs, tiny_llama

        self.model, self.tokenizer = tiny_llama(), None
        space = PruningSpace(DecoderAdapter(self.model).shape(), mlp_unit=16, adds_bias=True)
        calibration = TokenWindows(tiny_inputs(4, 32, seed=3), "t", "v")
        stats = collect_activation_stats(self.model, calibration)
        self.refit = PruningContext(self.model, space, stats, compute_importance(self.model, stats, "wanda-sp"),
                                    reconstruction=Reconstruction("ls", calibration=calibration))
        self.test512 = TokenWindows(tiny_inputs(2, 64, seed=9), "t", "test")
        self.test128 = TokenWindows(tiny_inputs(4, 32, seed=9), "t", "test")
        self.fitness = TokenWindows(tiny_inputs(2, 32, seed=5), "t", "fit")
        self.pool = TokenWindows(tiny_inputs(6, 32, seed=5), "t", "fit")
        self.cli_defaults = RunConfig(model="tiny")
        # The smoke test's "LLM" answers nonsense: every role falls back to its classic operator,
        # which still exercises the LLM arms' whole path (prompt, parse, retry, fallback, records).
        self.backend_factory = lambda: ChatBackend(name="smoke", chat=FakeListChatModel(responses=["no idea"]))

    def budget(self, rate: float, granularity: str = "layer", context: PruningContext | None = None):
        """Budgets are priced in a context's own space (a compensation bias is a parameter)."""
        return make_budget((context or self.wanda).space, None, rate, granularity)

    def search_context(self, refit: bool, metric: str = "wanda-sp") -> PruningContext:
        if metric == "obs":
            return self.obs
        if metric != "wanda-sp":
            raise ValueError(f"the headline's searches rank units with wanda-sp or obs, not {metric!r}")
        return self.refit if refit else self.wanda

    def setup(self, rate: float, refit: bool = False, metric: str = "wanda-sp") -> AblationSetup:
        context = self.search_context(refit, metric)
        config = replace(self.cli_defaults, rate=rate, model="smollm2-135m", reconstruct="ls" if refit else "off",
                         metric=metric)
        if self.args.smoke:
            config = replace(config, population=4, generations=1, offspring=4, fidelity="2x16:3,2x32:2")
        return AblationSetup(config=config, context=context,
                             budgets={g: self.budget(rate, g, context) for g in ("layer", "module")},
                             fitness_windows=self.fitness, test_windows=self.test512, fitness_pool=self.pool,
                             backend_factory=self._backend)

    def _backend(self):
        if self._started_backend is None:
            self._started_backend = self.backend_factory()
        return self._started_backend

    def close(self):
        if self._started_backend is not None:
            self._started_backend.close()


# method -> (pruning context, allocation as `main.py prune --allocation` names it)
FIXED_ALLOCATIONS = {"uniform wanda-sp": ("wanda", "uniform"), "uniform flap": ("flap", "uniform"),
                     "flap global": ("flap", "flap"), "owl wanda-sp": ("wanda", "owl"),
                     "uniform wanda-sp + refit": ("refit", "uniform"), "owl wanda-sp + refit": ("refit", "owl"),
                     "uniform obs + refit": ("obs", "uniform"), "llm-pruner range + refit": ("refit", "llm-pruner"),
                     "llm-pruner range obs + refit": ("obs", "llm-pruner")}


def fixed_plan(bench: Bench, method: str, rate: float):
    """(context, repair result) for a one-shot allocation method, exactly as `main.py prune` makes it
    (repair prices units in the context's own space: compensation biases count)."""
    which, name = FIXED_ALLOCATIONS[method]
    context = bench.context(which)
    budget = bench.budget(rate, context=context)
    if which == "obs":  # Hessian-aware scores come from the reference pass at this budget
        context.prepare_for(budget)
    options = SimpleNamespace(allocation=name, owl_threshold=5.0, owl_lambda=0.08)  # the CLI's defaults
    return context, repair(choose_genome(options, context, budget, "layer"), context.space, budget)


def search_cells(bench: Bench, rate: float, arm: str, seeds: list[int], out_root: Path, refit: bool = False,
                 metric: str = "wanda-sp") -> list[dict]:
    # searches since exact moves and multi-fidelity selection (the older ablation-rate* folders hold the
    # searches before them, kept as measured); ranked by OBS: a folder of their own
    out_dir = out_root / f"searches-rate{rate}{'-refit' if refit else ''}{'' if metric == 'wanda-sp' else '-' + metric}"
    setup = bench.setup(rate, refit, metric)
    if not bench.args.smoke:  # the same folder `main.py ablate --rate R` would use: same settings
        from commands.ablate import check_settings

        check_settings(out_dir, setup.config.measured())
    out_dir.mkdir(parents=True, exist_ok=True)
    uniform_reference(setup, out_dir)  # the ablation report's reference line
    cells = []
    for seed in seeds:
        print(f"  search {arm} rate {rate} seed {seed} ...", flush=True)
        cells.append(run_cell(setup, parse_arm(arm), seed, out_dir))
    return cells


def model_for(bench: Bench, method: str, rate: float, store: ResultStore):
    """The pruned model of a method at a rate (for searches: the best seed's plan), and its params."""
    if method == "dense":
        return bench.model, None
    if method in FIXED:
        context, result = fixed_plan(bench, method, rate)
        return context.prune(result.plan, exact=True), result
    entry = store.data[f"{rate}|{method}|search"]
    plan = PruningPlan.from_list(entry["best_plan"])
    context = bench.search_context(uses_refit(method), search_metric(bench, method))
    if context is bench.obs:  # its scores come from the reference pass at this budget (read back from the cache)
        context.prepare_for(bench.budget(rate, context=context))
    return context.prune(plan, exact=True), None


def ppl_row_is_complete(row: dict | None, method: str, seeds: list[int]) -> bool:
    """A search row counts as done only if it covers every seed asked for now: a rerun with more
    seeds extends it (finished cells are reused, only the new seeds run)."""
    if row is None:
        return False
    return method not in SEARCHES or set(seeds) <= set(row.get("seeds", []))


def stale_keys(store: ResultStore, rate, method: str, best_plan: list) -> list[str]:
    """Timing and zero-shot measure the best seed's model: if a new seed changed the best plan,
    they describe another model and must be redone."""
    previous = store.data.get(f"{rate}|{method}|search")
    if previous is None or previous["best_plan"] == best_plan:
        return []
    return [k for k in (f"{rate}|{method}|timing", f"{rate}|{method}|zeroshot") if store.has(k)]


def stage_ppl(bench, store, rate, method, seeds, out_root):
    key = f"{rate}|{method}|ppl"
    if ppl_row_is_complete(store.data.get(key), method, seeds):
        return
    row: dict = {"method": method, "rate": rate}
    if method in SEARCHES:
        arm = SEARCHES[method]
        cells = search_cells(bench, rate, arm, seeds, out_root, refit=uses_refit(method),
                             metric=search_metric(bench, method))
        best = min(cells, key=lambda c: c["best_fitness"])
        for stale in stale_keys(store, rate, method, best["best_plan"]):
            store.drop(stale)
        ppls = [c["test_ppl"] for c in cells]
        store.put(f"{rate}|{method}|search", {
            "best_plan": best["best_plan"], "best_seed": best["seed"],
            "best_rates": best["best_rates"], "granularity": best["granularity"]})
        row |= {"seeds": [c["seed"] for c in cells], "ppl512_per_seed": ppls, "ppl512": statistics.fmean(ppls),
                "ppl512_std": statistics.stdev(ppls) if len(ppls) > 1 else 0.0,
                "fitness_per_seed": [c["best_fitness"] for c in cells], "evaluations": statistics.fmean(c["evaluations"] for c in cells),
                "search_wall_s": statistics.fmean(c["search_wall_s"] for c in cells),
                "llm_tokens": statistics.fmean(c["llm_tokens"] for c in cells), "rates": best["best_rates"],
                "granularity": best["granularity"]}
    model, result = model_for(bench, method, rate, store)
    if method == "dense":
        shape = bench.wanda.space.shape
        row |= {"total_params": shape.total_params(), "block_params": shape.block_params(),
                "budget_params": shape.total_params(), "ppl512": perplexity(model, bench.test512)}
    elif method in FIXED:
        row |= {"total_params": result.total_params, "block_params": result.block_params,
                "budget_params": bench.budget(rate).target_params, "rates": result.genome.to_list(),
                "granularity": result.genome.granularity, "ppl512": perplexity(model, bench.test512)}
    else:  # the searches' PPL@512 comes from their cells (every seed)
        plan = PruningPlan.from_list(store.data[f"{rate}|{method}|search"]["best_plan"])
        space = bench.search_context(uses_refit(method), search_metric(bench, method)).space
        row |= {"total_params": space.total_params(plan), "block_params": space.block_params(plan),
                "budget_params": bench.budget(rate).target_params}
    row["ppl128"] = perplexity(model, bench.test128)
    store.put(key, row)
    print(f"  {rate} {method}: ppl512 {row['ppl512']:.2f} ppl128 {row['ppl128']:.2f}", flush=True)


def stage_timing(bench, store, rate, method):
    from evaluation.timing import time_model

    key = f"{rate}|{method}|timing"
    if store.has(key) or not store.has(f"{rate}|{method}|ppl"):
        return
    model, _ = model_for(bench, method, rate, store)
    kwargs = {"batch_sizes": (1,), "seqlens": (64,), "decode_tokens": 4, "repeats": 1} if bench.args.smoke else {}
    store.put(key, time_model(model, **kwargs))


def stage_zeroshot(bench, store, rate, method):
    from evaluation.zeroshot import zero_shot

    key = f"{rate}|{method}|zeroshot"
    if store.has(key) or bench.args.smoke or not bench.args.data_dir or not store.has(f"{rate}|{method}|ppl"):
        return
    model, _ = model_for(bench, method, rate, store)
    store.put(key, zero_shot(model, bench.tokenizer, data_dir=bench.args.data_dir, limit=bench.args.zero_shot_limit or None,
                             batch_size=8))
    print(f"  {rate} {method}: zero-shot average {store.data[key]['average']:.3f}", flush=True)


def table(store: ResultStore, rates: list[float], methods: list[str]) -> list[dict]:
    dense = store.data.get("dense|dense|ppl")
    dense_t = store.data.get("dense|dense|timing")
    rows = []
    for rate in sorted(rates):
        for method in methods:
            ppl = store.data.get(f"{rate}|{method}|ppl")
            if not ppl:
                continue
            row = dict(ppl)
            timing = store.data.get(f"{rate}|{method}|timing")
            if timing and dense_t:
                largest = list(dense_t["prefill"])[-1]  # 4x512 on the real grid
                row["prefill_setting"] = largest
                row["prefill_speedup"] = dense_t["prefill"][largest]["median_s"] / timing["prefill"][largest]["median_s"]
                row["decode_speedup"] = timing["decode"]["tokens_per_s"] / dense_t["decode"]["tokens_per_s"]
            rows.append(row | zero_shot_columns(store.data.get(f"{rate}|{method}|zeroshot")))
    if dense:
        rows.insert(0, {**dense, "rate": 0.0} | zero_shot_columns(store.data.get("dense|dense|zeroshot")))
    return rows


def zero_shot_columns(result: dict | None) -> dict:
    if not result:
        return {}
    return {"zero_shot": {t: task_score(r) for t, r in result["tasks"].items()}, "zero_shot_average": result["average"]}


def markdown(rows: list[dict], limit: int) -> str:
    head = ("| rate | method | params | block params | PPL@512 | PPL@128 | zero-shot avg | prefill x | decode x |"
            " evals | search s | LLM tokens |")
    lines = [head, "|---" * 12 + "|"]
    for r in rows:
        ppl = f"{r['ppl512']:.2f}" + (f" ± {r['ppl512_std']:.2f}" if r.get("ppl512_std") else "")
        zs = f"{r['zero_shot_average']:.3f}" if r.get("zero_shot_average") is not None else "-"
        pre = f"{r['prefill_speedup']:.2f}" if r.get("prefill_speedup") else "-"
        dec = f"{r['decode_speedup']:.2f}" if r.get("decode_speedup") else "-"
        evals = f"{r['evaluations']:.0f}" if r.get("evaluations") else "-"
        wall = f"{r['search_wall_s']:.0f}" if r.get("search_wall_s") else "-"
        tok = f"{r['llm_tokens']:,.0f}" if r.get("llm_tokens") else "-"
        lines.append(f"| {r['rate']} | {r['method']} | {r['total_params'] / 1e6:.1f}M | {r['block_params'] / 1e6:.1f}M | "
                     f"{ppl} | {r['ppl128']:.2f} | {zs} | {pre} | {dec} | {evals} | {wall} | {tok} |")
    out = "\n".join(lines)
    task_rows = [r for r in rows if r.get("zero_shot")]
    if task_rows:
        tasks = list(task_rows[0]["zero_shot"])
        out += f"\n\nZero-shot (lm-eval, acc_norm where reported else acc, {limit or 'all'} documents per task):\n\n"
        out += "| rate | method | " + " | ".join(tasks) + " | average |\n" + "|---" * (len(tasks) + 3) + "|\n"
        for r in task_rows:
            out += (f"| {r['rate']} | {r['method']} | " + " | ".join(f"{r['zero_shot'][t]:.3f}" for t in tasks)
                    + f" | {r['zero_shot_average']:.3f} |\n")
    return out


def plots(rows: list[dict], out_root: Path, rates: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "dense"]
    for method in methods:
        pts = sorted((r["rate"], r["ppl512"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    dense = next((r for r in rows if r["method"] == "dense"), None)
    if dense:
        ax.axhline(dense["ppl512"], color="black", linestyle="--", linewidth=1, label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("average pruning rate")
    ax.set_ylabel("WikiText-2 test PPL (512)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_root / "headline_ppl_vs_rate.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(rates), 1, figsize=(8, 2.4 * len(rates)), squeeze=False)
    for ax, rate in zip(axes[:, 0], rates):
        for r in rows:
            if r["rate"] == rate and r.get("rates") and r["method"] != "uniform wanda-sp":
                rates_ = r["rates"]
                if r.get("granularity") == "module":  # show the per-layer average of attention and MLP
                    n = len(rates_) // 2
                    rates_ = [(a + m) / 2 for a, m in zip(rates_[:n], rates_[n:])]
                ax.plot(range(len(rates_)), rates_, marker=".", linewidth=1, label=r["method"])
        ax.axhline(rate, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"rate {rate}: per-layer pruning rate of each method (dashed = uniform)", fontsize=8)
        ax.set_ylabel("rate")
        if ax.lines[:-1]:
            ax.legend(fontsize=6, ncol=3)
    axes[-1, 0].set_xlabel("decoder layer")
    fig.tight_layout()
    fig.savefig(out_root / "headline_rate_profiles.png", dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rates", default="0.2,0.35,0.1,0.5", help="run in this order (a run cut short keeps the first)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds per search method")
    parser.add_argument("--methods", default=None, help="comma list (default: all)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="ppl (incl. the searches), timing, zeroshot; `report` alone only rewrites headline.md and the PNGs")
    parser.add_argument("--zero-shot-limit", type=int, default=100, help="documents per task (0 = all)")
    parser.add_argument("--test-windows", type=int, default=32, help="WikiText-2 test windows of 512 tokens (x4 at 128)")
    parser.add_argument("--smoke", action="store_true", help="tiny random Llama, one seed, seconds: checks the table's shape")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    out_root = Path(args.out) if args.out else RESULTS
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.smoke else None]
    methods = args.methods.split(",") if args.methods else list(FIXED) + list(SEARCHES)
    stages = args.stages.split(",")
    torch.set_num_threads(2)
    store = ResultStore("headline", out_root)
    store.put("machine", machine())
    started = time.perf_counter()
    if stages == ["report"]:
        return write_report(store, out_root, args.zero_shot_limit, started)
    bench = Bench(args)
    try:
        if "ppl" in stages:
            stage_ppl(bench, store, "dense", "dense", seeds, out_root)
        if "timing" in stages:
            stage_timing(bench, store, "dense", "dense")
        for rate in rates:
            for stage in stages:
                for method in methods:
                    print(f"[rate {rate}] {stage}: {method}", flush=True)
                    if stage == "ppl":
                        stage_ppl(bench, store, rate, method, seeds, out_root)
                    elif stage == "timing":
                        stage_timing(bench, store, rate, method)
                    elif stage == "zeroshot":
                        stage_zeroshot(bench, store, rate, method)
        if "zeroshot" in stages:
            stage_zeroshot(bench, store, "dense", "dense")
    finally:
        bench.close()
    return write_report(store, out_root, args.zero_shot_limit, started)


def write_report(store: ResultStore, out_root: Path, zero_shot_limit: int, started: float) -> int:
    """headline.md and the PNGs from *everything* stored (a run of some rates or methods adds rows; it
    does not hide the others)."""
    known = list(FIXED) + list(SEARCHES)
    stored = [key.split("|") for key in store.data if key.count("|") == 2]
    rates = sorted({float(rate) for rate, _, _ in stored if rate != "dense"})
    methods = known + sorted({m for _, m, _ in stored if m not in known and m != "dense"})
    rows = table(store, rates, methods)
    store.put("table", rows)
    (out_root / "headline.md").write_text(markdown(rows, zero_shot_limit))
    plots(rows, out_root, rates)
    print(markdown(rows, zero_shot_limit))
    print(f"done in {time.perf_counter() - started:.0f} s; {out_root / 'headline.md'}, headline.json, PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
