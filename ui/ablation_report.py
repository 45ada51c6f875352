"""The ablation comparison: per-arm summary over seeds, as a rich table, ablation.md,
ablation.json and convergence.png (best fitness vs evaluations, one line per arm, seed band)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

COLUMNS = ("arm", "seeds", "best fitness", "test PPL", "evals to beat uniform", "evals to beat uniform -20%",
           "evaluations", "search wall s", "LLM calls", "LLM tokens", "LLM answers used")
SHORT = ("arm", "n", "best fitness", "test PPL", "evals to < uniform", "evals to -20%", "evals", "wall s", "calls",
         "tokens", "used")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


BEAT_UNIFORM_BY = 0.2  # "evaluations needed to beat uniform Wanda-sp by 20%"


def evaluations_to_reach(curve: list[float], target: float, strictly: bool = False) -> int | None:
    """1-based index of the first generation whose best is <= target (< with `strictly`). Each generation's
    best is scored on its own fresh sample, the target on the fixed windows: indicative, not exact."""
    return next((k + 1 for k, v in enumerate(curve) if (v < target if strictly else v <= target)), None)


def summarize(cells: list[dict], arm_order: list[str], reference: dict) -> list[dict]:
    by_arm: dict[str, list[dict]] = {}
    for cell in cells:
        by_arm.setdefault(cell["arm"], []).append(cell)
    order = [a for a in arm_order if a in by_arm] + sorted(a for a in by_arm if a not in arm_order)
    rows = []
    for arm in order:
        group = sorted(by_arm[arm], key=lambda c: c["seed"])
        fit, ppl = _mean_std([c["best_fitness"] for c in group]), _mean_std([c["test_ppl"] for c in group])
        uniform = reference["uniform_fitness"]
        below = [e for e in (evaluations_to_reach(c["curve"], uniform, strictly=True) for c in group) if e]
        reached = [e for e in (evaluations_to_reach(c["curve"], (1 - BEAT_UNIFORM_BY) * uniform) for c in group) if e]
        outcomes: dict[str, int] = {}
        for c in group:
            for counts in c["outcomes"].values():
                for outcome, n in counts.items():
                    outcomes[outcome] = outcomes.get(outcome, 0) + n
        final = sum(outcomes.get(k, 0) for k in ("used", "repaired", "retried", "fallback"))
        rows.append({
            "arm": arm, "seeds": [c["seed"] for c in group], "best_fitness_mean": fit[0], "best_fitness_std": fit[1],
            "best_fitness_min": min(c["best_fitness"] for c in group),
            "test_ppl_mean": ppl[0], "test_ppl_std": ppl[1],
            "evals_to_beat_uniform_median": statistics.median(reached) if reached else None,
            "seeds_beating_uniform": len(reached),
            "evals_to_below_uniform_median": statistics.median(below) if below else None,
            "seeds_below_uniform": len(below),
            "evaluations_mean": statistics.fmean(c["evaluations"] for c in group),
            "search_wall_s_mean": statistics.fmean(c["search_wall_s"] for c in group),
            "llm_calls_mean": statistics.fmean(c["llm_calls"] for c in group),
            "llm_tokens_mean": statistics.fmean(c["llm_tokens"] for c in group),
            "llm_used_share": (outcomes.get("used", 0) + outcomes.get("repaired", 0)) / final if final else None,
            "outcomes": outcomes,
        })
    return rows


def _cells(row: dict) -> list[str]:
    beat = row["evals_to_beat_uniform_median"]
    below = row["evals_to_below_uniform_median"]
    used = row["llm_used_share"]
    several = len(row["seeds"]) > 1
    return [
        row["arm"], str(len(row["seeds"])),
        f"{row['best_fitness_mean']:.2f}" + (f" ± {row['best_fitness_std']:.2f}" if several else ""),
        f"{row['test_ppl_mean']:.2f}" + (f" ± {row['test_ppl_std']:.2f}" if several else ""),
        ("-" if below is None else f"{below:g}") + f" ({row['seeds_below_uniform']}/{len(row['seeds'])})",
        ("-" if beat is None else f"{beat:g}") + f" ({row['seeds_beating_uniform']}/{len(row['seeds'])})",
        f"{row['evaluations_mean']:.0f}", f"{row['search_wall_s_mean']:.0f}", f"{row['llm_calls_mean']:.0f}",
        f"{row['llm_tokens_mean']:,.0f}", "-" if used is None else f"{used:.0%}",
    ]


def verdict(rows: list[dict], llm_arm: str = "llm", control: str = "classic") -> str:
    """One factual sentence on the LLM arm against the classic operators (means and seed ranges)."""
    by = {r["arm"]: r for r in rows}
    if llm_arm not in by or control not in by:
        return ""
    a, b = by[llm_arm], by[control]
    diff = (a["best_fitness_mean"] - b["best_fitness_mean"]) / b["best_fitness_mean"]
    overlap = abs(a["best_fitness_mean"] - b["best_fitness_mean"]) <= a["best_fitness_std"] + b["best_fitness_std"]
    word = "lower (better)" if diff < 0 else "higher (worse)"
    if min(len(a["seeds"]), len(b["seeds"])) < 2:
        spread = "measured on a single seed: run more seeds before concluding anything"
    elif overlap:
        spread = "within one standard deviation of each other: no clear difference at this number of seeds"
    else:
        spread = "further apart than the sum of their standard deviations"
    return (f"`{llm_arm}` reached a mean best fitness {abs(diff):.1%} {word} than `{control}` "
            f"({a['best_fitness_mean']:.2f} vs {b['best_fitness_mean']:.2f}, {len(a['seeds'])} vs {len(b['seeds'])} seeds); "
            f"the two are {spread}.")


def rich_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in SHORT:  # the terminal is narrow; ablation.md has the long names
        table.add_column(column, justify="left" if column == "arm" else "right")
    for row in rows:
        table.add_row(*_cells(row))
    return table


def markdown(rows: list[dict], settings: dict, reference: dict) -> str:
    lines = [
        "# Ablation", "",
        f"Model {settings.get('model')}, {settings.get('budget_description') or settings.get('budget')}, "
        + (f"equal search wall time: each run stops after the generation that passes {settings['search_minutes']:g} "
         f"minutes (--search-minutes; at most {settings.get('generations')} generations of {settings.get('offspring')}), "
         if settings.get("search_minutes") else
         f"{settings.get('max_evals')} fitness evaluations per run "
         f"(population {settings.get('population')} + {settings.get('generations')} x {settings.get('offspring')}), ")
        +
        f"fitness {settings.get('fitness')} on {settings.get('fitness_tokens')} WikiText-2 validation tokens; "
        f"test PPL on {settings.get('test_windows')} WikiText-2 test windows of {settings.get('eval_seqlen')} tokens.",
        f"{reference.get('name', 'uniform wanda-sp').capitalize()}: fitness {reference['uniform_fitness']:.2f}, test PPL {reference['uniform_test_ppl']:.2f}; "
        f"'evals to beat uniform': median over seeds of the first generation whose best (scored on that generation's "
        f"own fresh sample, so indicative only) is below uniform's; '-20%': at or below {(1 - BEAT_UNIFORM_BY) * reference['uniform_fitness']:.2f}; (k/n) = seeds that got there.", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    sentence = verdict(rows)
    if sentence:
        lines += ["", sentence]
    lines += ["", "![convergence](convergence.png)", ""]
    return "\n".join(lines)


def plot_convergence(path: Path, cells: list[dict], rows: list[dict], reference: dict) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for row in rows:
        curves = [c["curve"] for c in cells if c["arm"] == row["arm"] and c["curve"]]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        padded = [c + [c[-1]] * (length - len(c)) for c in curves]
        xs = list(range(1, length + 1))
        per_eval = list(zip(*padded))
        line, = ax.plot(xs, [statistics.median(v) for v in per_eval], label=row["arm"], linewidth=1.4)
        ax.fill_between(xs, [min(v) for v in per_eval], [max(v) for v in per_eval], color=line.get_color(), alpha=0.15)
    ax.axhline(reference["uniform_fitness"], color="black", linestyle="--", linewidth=1, label=reference.get("name", "uniform wanda-sp"))
    ax.axhline((1 - BEAT_UNIFORM_BY) * reference["uniform_fitness"], color="grey", linestyle=":", linewidth=1, label="uniform -20%")
    ax.set_xlabel("generation")
    ax.set_ylabel("best of the generation, on its own sample (lower is better)")
    ax.set_yscale("log")
    ax.set_title("median over seeds, band = min..max")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_ablation_report(out_dir: Path, cells: list[dict], arm_order: list[str], settings: dict,
                          reference: dict) -> list[dict]:
    rows = summarize(cells, arm_order, reference)
    (out_dir / "ablation.json").write_text(json.dumps(
        {"settings": settings, "reference": reference, "arms": rows, "verdict": verdict(rows), "cells": cells},
        indent=2))
    (out_dir / "ablation.md").write_text(markdown(rows, settings, reference))
    plot_convergence(out_dir / "convergence.png", cells, rows, reference)
    return rows
