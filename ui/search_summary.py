"""The end-of-search summary: best vs uniform Wanda-sp vs dense, and what the search cost."""
from __future__ import annotations

from rich.table import Table

from pruning.budget import format_params
from ui.tables import rates_line


def print_summary(console, summary: dict, budget) -> None:
    final = summary.get("final") or {}
    if final:
        table = Table(title=f"WikiText-2 test perplexity ({final['test_windows']} windows x {final['test_seqlen']} tokens)")
        for col in ("model", "params", "PPL"):
            table.add_column(col, justify="right" if col != "model" else "left")
        for name, ppl in final["ppl"].items():
            table.add_row(name, format_params(final["params"][name]), f"{ppl:.2f}")
        console.print(table)
    best = summary.get("best") or {}
    if best:
        console.print(f"best genome (fitness {best['fitness']:.3f}, origin {best['origin']}): {rates_line(best['rates'])}")
    cost = Table(title="search cost")
    cost.add_column("what")
    cost.add_column("value", justify="right")
    llm = summary["llm"]
    cost.add_row("fitness evaluations (run total)", str(summary["evaluations"]))
    cost.add_row("wall time this session", f"{summary['wall_s_this_session']:.0f} s")
    cost.add_row("LLM calls / latency", f"{llm['calls']} / {llm['latency']:.0f} s")
    cost.add_row("LLM tokens (prompt + completion)", f"{llm['prompt']} + {llm['completion']}")
    for role, counts in sorted(summary["outcomes"].items()):
        cost.add_row(f"{role} answers", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    console.print(cost)
    if final:
        console.print(f"checkpoint: {final['checkpoint'] or 'not saved (--save off)'}   run: {summary['run_dir']}   budget {budget.description} "
                      f"= {format_params(budget.target_params)}")
