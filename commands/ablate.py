"""`main.py ablate`: does the LLM help? Runs arms x seeds at an equal evaluation budget on one
loaded model (importance computed once, shared by every cell) and writes the comparison:
ablation.md, ablation.json, convergence.png in the ablation folder.

To use more cores, run disjoint arms in parallel processes with the same --out (each cell has its
own folder), then `main.py ablate --out DIR --report-only` (or any of them finishing) merges all.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from agents.chat import make_backend
from assembly.build import prepare_run
from assembly.config import RunConfig, upgraded
from assembly.placement_options import offload_folder_for, ready_machine
from experiments.ablation import DEFAULT_ARMS, AblationSetup, parse_arm, run_cell, uniform_reference
from ui.ablation_report import rich_table, verdict, write_ablation_report
from ui.console import console, err_console, progress_bar

def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give a comma list of integers, e.g. 0,1,2") from None
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    return seeds


def check_settings(out_dir: Path, settings: dict) -> None:
    """settings: `RunConfig.measured()` (what a cell measures). A folder made with other values is
    refused; a key an older folder did not store counts as that older default (RunConfig's)."""
    path = out_dir / "settings.json"
    if path.exists():
        stored = upgraded(json.loads(path.read_text()))  # older folders: what their settings meant
        settings = json.loads(json.dumps(settings))  # as stored (tuples become lists)
        defaults = json.loads(json.dumps(RunConfig().measured()))
        changed = {k: (stored.get(k, defaults[k]), v) for k, v in settings.items()
                   if k in defaults and stored.get(k, defaults[k]) != v}
        if changed:
            listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"ablation folder {out_dir} was made with other settings ({listed}); "
                             "rerun with the same settings to resume, or pass another --out")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))


def load_cells(out_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out_dir / "cells").glob("*/cell.json"))]


def run_ablate(args) -> int:
    arms = [parse_arm(a) for a in (args.arms.split(",") if args.arms else DEFAULT_ARMS) if a.strip()]
    seeds = parse_seeds(args.seeds)
    if args.budget is None and args.rate is None:
        args.rate = 0.2
    out_dir = Path(args.out) if args.out else Path("runs") / f"ablation-{datetime.now():%Y%m%d-%H%M%S}"
    config = RunConfig.from_args(args)
    settings_record = config.measured()
    if args.report_only:
        return _report(out_dir, [a.name for a in arms], None)
    check_settings(out_dir, settings_record)
    if any(arm.uses_llm for arm in arms) and config.agent == "classic":
        raise ValueError("LLM arms need --agent local, openai:<model> or a URL (not classic); or drop those arms")
    ready_machine(config, config.prune_settings(), offload_folder_for(config, out_dir))
    prepared = prepare_run(config, out_dir, calibration_label="calibration (shared by every cell)")

    def backend_factory():
        with err_console.status(f"starting agent backend {config.agent} ..."):
            return make_backend(config.agent, config.agent_model, config.temperature, config.max_tokens,
                                config.agent_timeout, slots=config.agent_slots)

    budgets = {g: prepared.budget_for(g) for g in {a.granularity for a in arms} | {"layer"}}
    setup = AblationSetup(config=config, context=prepared.context, budgets=budgets,
                          fitness_windows=prepared.fitness_windows, test_windows=prepared.test_windows,
                          fitness_pool=prepared.fitness_pool,
                          backend_factory=backend_factory)
    settings_record |= {"budget_description": budgets["layer"].description, "max_evals": setup.max_evals,
                        "test_windows": len(prepared.test_windows)}
    (out_dir / "settings.json").write_text(json.dumps(settings_record, indent=2))  # for --report-only
    try:
        with err_console.status("uniform Wanda-sp reference ..."):
            uniform_reference(setup, out_dir)  # reference.json: the line the comparison measures against
        cells = [(arm, seed) for arm in arms for seed in seeds]
        for k, (arm, seed) in enumerate(cells, 1):
            with progress_bar(f"[{k}/{len(cells)}] {arm.name} seed {seed}") as progress:
                cell = _run_with_count(setup, arm, seed, out_dir, progress)
            err_console.print(f"  {arm.name} seed {seed}: best fitness {cell['best_fitness']:.3f}, test PPL "
                              f"{cell['test_ppl']:.2f}, {cell['evaluations']} evaluations, {cell['search_wall_s']:.0f} s")
    finally:
        setup.close()
    return _report(out_dir, [a.name for a in arms], settings_record)


def _run_with_count(setup, arm, seed, out_dir, progress):
    """The graph reports evaluations per generation; count them across the whole cell for the bar."""
    seen = {"n": 0}

    def counting(kind, data):
        if kind == "evaluated" and not data.get("cached"):
            seen["n"] += 1
            progress(min(seen["n"], setup.max_evals), setup.max_evals)

    return run_cell(setup, arm, seed, out_dir, on_event=counting)


def _report(out_dir: Path, arm_order: list[str], settings: dict | None) -> int:
    cells = load_cells(out_dir)
    if not cells:
        raise FileNotFoundError(f"no finished cells under {out_dir / 'cells'}; run the ablation first")
    settings = settings or json.loads((out_dir / "settings.json").read_text())
    reference = json.loads((out_dir / "reference.json").read_text())  # written before any cell
    rows = write_ablation_report(out_dir, cells, arm_order, settings, reference)
    console.print(rich_table(rows, f"ablation: {settings.get('budget_description', '')}, "
                                   f"{settings.get('max_evals')} evaluations per run"))
    sentence = verdict(rows)
    if sentence:
        console.print(sentence.replace("`", ""))
    console.print(f"comparison: {out_dir / 'ablation.md'}, {out_dir / 'ablation.json'}, {out_dir / 'convergence.png'}")
    return 0
