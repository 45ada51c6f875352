"""The run report: report.md + report.json + PNG plots (per-layer rates, fitness per generation)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from evaluation.zeroshot import task_score, task_stderr  # noqa: E402


def plot_rates(path: Path, best_rates: list[float], uniform_rates: list[float], granularity: str) -> None:
    n = len(best_rates) if granularity == "layer" else len(best_rates) // 2
    fig, ax = plt.subplots(figsize=(max(6, n * 0.25), 3.2))
    xs = range(n)
    if granularity == "layer":
        ax.bar(list(xs), best_rates, width=0.6, label="searched")
    else:
        ax.bar([x - 0.2 for x in xs], best_rates[:n], width=0.4, label="searched: attention")
        ax.bar([x + 0.2 for x in xs], best_rates[n:], width=0.4, label="searched: MLP")
    ax.plot(list(xs), uniform_rates[:n], color="black", linestyle="--", label="uniform")
    _finish(fig, ax, path, "decoder layer", "pruning rate")


def plot_fitness(path: Path, generations: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    gens = [g["generation"] for g in generations]
    ax.plot(gens, [g["best"] for g in generations], marker="o", label="best")
    ax.plot(gens, [g["mean"] for g in generations], marker=".", label="population mean")
    _finish(fig, ax, path, "generation", "fitness (lower is better)")


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_lines(final: dict) -> list[str]:
    """The searched model against the strongest one-shot row, and what the search's fitness was worth."""
    ppl = final["ppl"]
    lines = []
    one_shot = [name for name in ppl if name.startswith("uniform") and name != "uniform wanda-sp"] or ["uniform wanda-sp"]
    best = min(one_shot, key=lambda name: ppl[name])
    if "searched" in ppl:
        change = ppl["searched"] / ppl[best] - 1
        lines.append(f"Searched vs the strongest one-shot baseline ({best}): {ppl['searched']:.2f} vs {ppl[best]:.2f} "
                     f"test PPL ({change:+.1%}).")
    if final.get("reconstruct") == "ls":
        lines.append("Reconstruction: `--reconstruct ls`, o_proj and down_proj of every pruned layer re-fitted by least "
                     "squares on what the pruned layers before it produce.")
    fitness = final.get("fitness")
    if fitness:
        lines.append(f"The search scored the best plan at {fitness['search']:.4g} (refit table: per-layer refits from one "
                     f"reference pass along the uniform plan); re-fitted exactly it scores {fitness['final']:.4g} "
                     f"({fitness['final'] / fitness['search'] - 1:+.1%}) on the same fitness windows.")
    return lines + [""] if lines else []


def write_report(run_dir: Path, summary: dict, generations: list[dict], budget: dict) -> dict:
    run_dir = Path(run_dir)
    best, final = summary.get("best") or {}, summary.get("final") or {}
    files = {}
    if best and final.get("uniform_rates"):
        plot_rates(run_dir / "rates.png", best["rates"], final["uniform_rates"], best["granularity"])
        files["rates_png"] = "rates.png"
    if generations:
        plot_fitness(run_dir / "fitness.png", generations)
        files["fitness_png"] = "fitness.png"
    report = {"budget": budget, "best": best, "final": final, "generations": generations,
              "cost": {"evaluations": summary.get("evaluations"), "llm": summary.get("llm"),
                       "outcomes": summary.get("outcomes")}, "files": files}
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# Self-Pruner run {summary.get('run_id', '')}", "",
             f"Budget: {budget.get('description')} = {budget.get('target_params'):,} parameters "
             f"(dense {budget.get('dense_params'):,}; average rate {budget.get('average_rate'):.3f}).", ""]
    if final:
        lines += [f"## WikiText-2 test perplexity ({final['test_windows']} windows x {final['test_seqlen']} tokens)", "",
                  "| model | parameters | perplexity |", "|---|---:|---:|"]
        lines += [f"| {name} | {final['params'][name]:,} | {ppl:.2f} |" for name, ppl in final["ppl"].items()]
        lines.append("")
        lines += comparison_lines(final)
    if final.get("zero_shot"):
        names = list(final["zero_shot"])
        tasks = list(next(iter(final["zero_shot"].values()))["tasks"])
        first = next(iter(final["zero_shot"].values()))
        limit, documents = first.get("limit"), first.get("documents") or {}
        scope = (f"the first {limit} documents of each task" if limit else "every document of each task") + (
            f" ({', '.join(f'{t} {n}' for t, n in documents.items() if n)})" if documents else "")
        lines += ["## Zero-shot accuracy (acc_norm where lm-eval reports it, else acc)", "",
                  f"On {scope}; ± one standard error (lm-eval's, of a mean)" + (
                      ": with so few documents, differences within a few standard errors are noise" if limit else "")
                  + ".", "", "| model | " + " | ".join(tasks) + " | average |", "|---|" + "---:|" * (len(tasks) + 1)]
        for name in names:
            row = final["zero_shot"][name]
            cells = [f"{task_score(r):.3f}" + (f" ± {task_stderr(r):.3f}" if task_stderr(r) is not None else "")
                     for r in row["tasks"].values()]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['average']:.3f} |")
        lines.append("")
    if final.get("timing"):
        timing = final["timing"]
        lines += [f"## Inference timing ({timing['dense']['device']}, median of {timing['dense']['decode']['repeats']})", "",
                  f"| setting | dense | searched | speed-up (ideal {timing['speedup']['ideal']:.2f}x) |", "|---|---:|---:|---:|"]
        for key, row in timing["dense"]["prefill"].items():
            lines.append(f"| prefill {key} | {row['median_s'] * 1000:.1f} ms | "
                         f"{timing['searched']['prefill'][key]['median_s'] * 1000:.1f} ms | {timing['speedup']['prefill ' + key]:.2f}x |")
        lines.append(f"| decode | {timing['dense']['decode']['tokens_per_s']:.1f} tok/s | "
                     f"{timing['searched']['decode']['tokens_per_s']:.1f} tok/s | {timing['speedup']['decode']:.2f}x |")
        lines.append("")
    if final.get("exports"):
        lines += export_lines(final["exports"], (final.get("ppl") or {}).get("searched"))
    if best:
        champion = summary.get("champion")
        how = (f" Chosen on the fixed validation windows among {champion['pool']} plans (the seeds, each generation's "
               f"best, the last population){'; the last generation ranked another plan first' if champion['search_best_key'] != champion['plan_key'] else ''}"
               f"{_margin_note(champion)}."
               if champion else "")
        lines += ["## Best genome", "", (f"Fitness {best['fitness']:.4f}" if best.get("raw_fitness") is None else
                                         f"Objective {best['fitness']:.4f} (fitness {best['raw_fitness']:.4f}, predicted "
                                         f"latency {best['latency']:.3f} of dense)") + f", origin `{best['origin']}`.{how}", "",
                  "| layer | " + ("rate |" if best["granularity"] == "layer" else "attention | MLP |"),
                  "|---:|" + ("---:|" if best["granularity"] == "layer" else "---:|---:|")]
        n = len(best["rates"]) if best["granularity"] == "layer" else len(best["rates"]) // 2
        for i in range(n):
            cells = [best["rates"][i]] if best["granularity"] == "layer" else [best["rates"][i], best["rates"][n + i]]
            lines.append(f"| {i} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        lines.append("")
        if "rates_png" in files:
            lines += ["![per-layer rates](rates.png)", ""]
    objective = summary.get("objective") or {}
    if objective.get("latency_weight"):
        lines += ["## Objective", "", f"- {objective['describe']}",
                  f"- predicted prefill latency over dense: champion {objective.get('champion_latency', float('nan')):.3f}, "
                  f"uniform {objective['uniform_latency']:.3f} (module timings: `latency_table.json`); the fitness "
                  "columns below are this objective", ""]
    if generations:
        lines += ["## Fitness per generation", "", "| generation | best | mean | diversity | evaluations |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {g['generation']} | {g['best']:.4f} | {g['mean']:.4f} | {g['diversity']:.4f} | {g['evaluations']} |"
                  for g in generations]
        lines += ["", "![fitness](fitness.png)", ""]
    llm = summary.get("llm") or {}
    lines += ["## Search cost", "", f"- fitness evaluations: {summary.get('evaluations')}",
              f"- LLM calls: {llm.get('calls', 0)}, latency {llm.get('latency', 0):.0f} s, tokens "
              f"{llm.get('prompt', 0)} prompt + {llm.get('completion', 0)} completion"]
    for role, counts in sorted((summary.get("outcomes") or {}).items()):
        lines.append(f"- {role}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lines += worker_lines(summary.get("workers") or {})
    tools = summary.get("agent_tools")
    if tools and tools.get("why") != "no LLM roles":
        lines.append(f"- agent tools: {'on' if tools['on'] else 'off'} ({tools['why']})" + (
            f"; {tools['tool_calls']} tool calls, {tools['valid_tool_calls']} valid (table `tool_calls`)"
            if tools.get("tool_calls") else ""))
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return report


def worker_lines(workers: dict) -> list[str]:
    """Where the evaluations ran (`--workers`, `--ray-address`): per Ray worker, and what befell the workers."""
    by_worker = workers.get("evaluations") or {}
    if set(by_worker) <= {"coordinator"}:
        return []
    names = sorted(by_worker, key=lambda n: (n == "coordinator", len(n), n))
    cells = ", ".join(f"{'this process' if n == 'coordinator' else n} {by_worker[n]}" for n in names)
    events = workers.get("events") or {}
    told = ", ".join(f"{event} {count}" for event, count in sorted(events.items()) if event not in ("started", "agreement"))
    return [f"- evaluations by Ray worker: {cells}"] + (
        [f"- worker events: {told} (table `worker_events` in run.db)"] if told else [])


def export_lines(rows: list[dict], checkpoint_ppl: float | None) -> list[str]:
    """The exported files; each GGUF with its llama.cpp perplexity (same test windows) and speed."""
    speeds = next((list(k for k in row["speed"] if k != "threads") for row in rows if row.get("speed")), ["pp512", "tg128"])
    lines = ["## Exports", "", "| format | file | size | test ppl (llama.cpp) | vs checkpoint | "
             + " | ".join(f"{k} tok/s" for k in speeds) + " |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        name = row["format"] + (f" {row['type']}" if row.get("type") else "")
        size = f"{row['bytes'] / 1e6:.1f} MB" if row.get("bytes") else ""
        if "ppl" in row:
            drift = f"{(row['ppl'] / checkpoint_ppl - 1) * 100:+.2f}%" if checkpoint_ppl else ""
            speed = row.get("speed") or {}
            cells = [f"{row['ppl']:.3f}", drift, *(f"{speed[k]:.1f}" if k in speed else "" for k in speeds)]
        else:
            cells = [row.get("note", ""), "", "", ""]
        lines.append(f"| {name} | `{Path(row['file']).name}` | {size} | " + " | ".join(cells) + " |")
    padding = next((row["padding"] for row in rows if row.get("padding")), None)
    if padding and padding["query_heads_stored"] > padding["query_heads_real"]:
        lines += ["", f"DeciLM padding (exact zeros): {padding['query_heads_stored']} query heads stored for "
                      f"{padding['query_heads_real']} real, {padding['kv_heads_stored']} KV heads for {padding['kv_heads_real']}."]
    return lines + [""]


def _margin_note(champion: dict) -> str:
    """Why a seed stands although a searched plan scored lower (graphs/nodes.py champion_margin)."""
    if not champion.get("seed_kept_by_margin"):
        return ""
    return (f"; a searched plan scored lower there, but by less than {champion['margin']:.0%}, within what these windows "
            f"resolve: the best seed is kept")
