"""`main.py --model M (--budget B | --rate R)`: the self-pruning search, then finalize.

The command line becomes a `RunConfig`; `assembly.build` turns it into a prepared model and the
search's dependencies (fitness evaluator, roles, run database), the LangGraph search runs, and
the summary is printed. `--resume RUN` rebuilds the same pieces from the config stored in the
run's database and continues.
"""
from __future__ import annotations

import json
import re
import shlex
import time
from datetime import datetime
from pathlib import Path

from agents.chat import make_backend
from agents.prompting import PromptSet, prompt_overrides
from agents.roles import make_roles, uses_llm
from agents.tool_loop import decide_tools
from assembly.build import build_search, final_fitness, prepare_run
from assembly.config import RunConfig
from assembly.placement_options import offload_folder_for, pruned_offload_folder, ready_machine
from graphs.runner import run_search
from pruning.placement import OutOfMemory
from pruning.versions import versions
from store.run_store import RunStore
from tools.search_tools import SearchTools
from deploy.exports import check_export_spec, parse_export_spec
from evaluation.finalize import finalize_search
from evaluation.report import write_report
from evaluation.zeroshot_tasks import TASKS, task_file
from ui.console import STAGES, console, err_console, log_line, plain_output, progress_bar, stage
from ui.live import SearchView
from ui.search_summary import print_summary

RUNS_ROOT = Path("runs")


class RunNotFoundError(FileNotFoundError):
    pass


def status_line(text: str) -> None:
    if plain_output():
        log_line(text)
    else:
        err_console.print(text)


def run_dir_for(spec: str) -> Path:
    path = Path(spec)
    if (path / "run.db").exists():
        return path
    if (RUNS_ROOT / spec / "run.db").exists():
        return RUNS_ROOT / spec
    raise RunNotFoundError(f"--resume {spec}: no run found (looked for {path / 'run.db'} and {RUNS_ROOT / spec / 'run.db'})")


def new_run_id(args) -> str:
    size = args.budget if args.budget else f"rate{args.rate}"
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{Path(args.model).name}-{size}-{args.agent.split('#')[0]}")[:60]
    return f"{datetime.now():%Y%m%d-%H%M%S}-{slug.strip('-')}"


def zero_shot_options(args) -> dict | None:
    """lm-eval in finalize: 'auto' runs it when --data-dir holds the task files."""
    if args.zero_shot == "off" or args.eval_limit == 0:
        return None
    available = args.data_dir is not None and all((Path(args.data_dir) / f).exists() for f in ("boolq", "piqa"))
    if args.zero_shot == "auto" and not available:
        return None
    for task in TASKS:  # 'on' without the files: say which one is missing
        task_file(task, args.data_dir or ".")
    return {"data_dir": args.data_dir, "limit": args.eval_limit or None, "tasks": list(TASKS)}


def run_search_command(args) -> int:
    """args: the parsed command line; from here on the run is its `RunConfig` (on --resume, the
    stored run's, with this command line's process knobs such as --max-memory)."""
    config = RunConfig.from_args(args)
    resume = args.resume is not None
    if resume:
        run_dir = run_dir_for(args.resume)
        run = RunStore(run_dir / "run.db").run()
        if run is None:
            raise RunNotFoundError(f"--resume {args.resume}: {run_dir / 'run.db'} holds no run")
        config = config.resumed(json.loads(run["args"]))
        run_id = run["id"]  # also the checkpoint's thread id: the folder may have any name
    else:
        config = config.with_rate_default()
        run_id = new_run_id(config)
        run_dir = Path(config.out) if config.out else RUNS_ROOT / run_id
    llm = uses_llm(config.agent, config.llm_roles)  # --agent classic or --llm-roles "": no chat backend at all
    prompts = PromptSet.load(config.prompts, prompt_overrides(config.prompt)) if llm else None
    with stage("checking the budget and the machine (config only)"):
        config.check_values()
        ready_machine(config, config.prune_settings(), offload_folder_for(config, run_dir))
        check_export_spec(config.export)
        if config.workers > 1 or config.ray_address:  # before minutes of loading: Ray is an optional extra
            from distributed.ray_pool import check_worker_options

            check_worker_options(config)
        if config.export and config.save == "off":
            raise ValueError("--export needs the saved checkpoint: drop --save off or --export")
    # The agent first: an unreachable URL or a missing key should fail before minutes of loading.
    backend = None
    if llm:
        with err_console.status(f"starting agent backend {config.agent} ..."):
            backend = make_backend(config.agent, config.agent_model, config.temperature, config.max_tokens,
                                   config.agent_timeout, seed=config.seed, slots=config.agent_slots)
    try:
        return _search(config, run_id, run_dir, resume, prompts, backend)
    finally:
        if backend is not None:
            backend.close()


def write_config_file(run_dir: Path, config: RunConfig, run_id: str) -> None:
    """config.yaml: this run's settings as a file `--config` reads back (a rerun, or a variant of it)."""
    from dataclasses import fields

    from assembly.config_file import config_yaml

    names = {f.name for f in fields(config) if f.metadata["run"]} - {"out"}  # a rerun gets its own folder
    header = (f"# run {run_id}: every setting of this run (process knobs such as --workers and the folder are left out).\n"
              f"# Rerun or vary it: python main.py --config {run_dir / 'config.yaml'} [--seed 1 ...]\n")
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(config_yaml(config, names, header=header))
    tmp.replace(run_dir / "config.yaml")


def objective_summary(objective, best_plan) -> dict:
    """What the search ranked by; with --latency-weight the champion's predicted latency beside uniform's."""
    if objective is None:
        return {"kind": "fitness"}
    from pruning.genome import PruningPlan

    out = {"kind": "fitness x latency", "latency_weight": objective.weight, "describe": objective.describe(),
           "uniform_latency": round(objective.reference, 4), "table": objective.table.meta}
    if best_plan:
        out["champion_latency"] = round(objective.latency(PruningPlan.from_list(best_plan)), 4)
    return out


def _search(config, run_id, run_dir, resume, prompts, backend) -> int:
    try:
        return _search_stages(config, run_id, run_dir, resume, prompts, backend)
    except OutOfMemory as err:
        hint = f"what was evaluated is kept: resume with python main.py --resume {run_dir} --max-memory ..."
        raise OutOfMemory(err.stage, str(err.__cause__ or ""), hint) from err


def _search_stages(config: RunConfig, run_id, run_dir, resume, prompts, backend) -> int:
    prepared = prepare_run(config, run_dir)
    context, budget, loaded = prepared.context, prepared.budget_for(), prepared.loaded
    store = RunStore(run_dir / "run.db")
    store.start_run(run_id, config.model, budget.description, config.agent, config.to_dict(), versions())
    write_config_file(run_dir, config, run_id)
    workers = None  # the Ray evaluator pool (--workers / --ray-address)
    requeued = store.requeue_running() if resume else 0
    if requeued:  # plans a killed session had on Ray workers: unscored, so the search hands them out again
        status_line(f"{requeued} evaluations were in flight on Ray workers when the last session stopped: handed out again")
    try:
        tools_on, tools_why = decide_tools(config.agent_tools, backend)
        if backend is not None:
            status_line(f"agent tools: {'on' if tools_on else 'off'} ({tools_why})")
        roles = make_roles(backend, prompts, retries=config.retries, llm_roles=config.llm_roles,
                           tool_budget=config.tool_budget if tools_on else 0)
        record = {"source_model": loaded.name, "source": loaded.source, "run_id": run_id, "budget": budget.to_dict(),
                  "settings": config.prune_settings().to_dict(), "agent": config.agent, "versions": versions()}

        def finalizer(best):
            view.live.stop()  # progress bars of the final evaluation replace the live view
            # the champion's fitness is the judge's on the fixed windows as the search saw it (refit
            # table); finalize scores the same windows on the exactly re-fitted model: the report states the gap
            with stage("finalize"):
                return finalize_search(best.to_dict(), context, budget, loaded.tokenizer, prepared.test_windows,
                                       run_dir / "model", record, batch_size=config.batch_size,
                                       progress_factory=progress_bar, zero_shot_options=zero_shot_options(config),
                                       timing=config.timing == "on", status=status_line,
                                       offload_folder=pruned_offload_folder(loaded), save=config.save == "on",
                                       exports=parse_export_spec(config.export), fitness_of=judge.score)

        # the fixed windows finalize picks the champion on and states its fitness on (cached in run.db: a
        # resumed finalize does not score again); its KL reference is made at its first evaluate, in
        # finalize, while the model is still dense
        judge = final_fitness(config, context, prepared.fitness_windows, store=store)
        deps = build_search(config, context, budget, prepared.fitness_pool, store, roles, finalizer=finalizer,
                            judge=judge, latency_table=run_dir / "latency_table.json", status=status_line)
        if deps.objective is not None:
            status_line(f"objective: {deps.objective.describe()}")
        fitness = deps.fitness
        deps.parallel_llm = backend is not None and backend.slots > 1
        if tools_on:  # what the LLM roles may call before answering (tools/search_tools.py)
            deps.tools = SearchTools(fitness, deps.settings.stages[0], deps.layer_importance,
                                     timing=config.timing == "on",
                                     latency=deps.objective.table if deps.objective is not None else None)
        if config.workers > 1 or config.ray_address:
            from distributed.setup import start_fitness_workers

            with stage("starting Ray workers"), err_console.status("starting Ray workers (each loads the model) ..."):
                workers = start_fitness_workers(config, context, budget, prepared.fitness_pool, fitness, store,
                                                judge=judge, log=status_line)
        started = time.perf_counter()
        log_line(f"search {run_id}: {config.generations} generations of {config.offspring} children, population "
                 f"{config.population}, stages {config.fidelity}")
        with stage("search"), SearchView(f"search {run_id}", config.generations) as view:
            deps.on_event = view.on_event
            final = run_search(deps, run_id, run_dir / "checkpoint.db", resume=resume, on_update=view.on_node)
        summary = {"run_id": run_id, "run_dir": str(run_dir), "wall_s_this_session": time.perf_counter() - started,
                   "evaluations": store.evaluation_count(),  # every stage and the champion's, all sessions
                   "evaluations_this_session": fitness.evaluations + judge.evaluations,
                   "tokens_scored_this_session": fitness.tokens_scored,
                   "scoring_seconds_this_session": round(fitness.seconds, 1), "llm": store.token_totals(),
                   "workers": {"evaluations": store.evaluations_by_worker(), "events": store.worker_event_counts()},
                   "agent_tools": {"on": tools_on, "why": tools_why, **store.tool_call_counts()},
                   "objective": objective_summary(deps.objective, (final.get("best") or {}).get("plan")),
                   "outcomes": store.outcome_counts(), "best": final.get("best"), "champion": store.champion(),
                   "final": final.get("final"),
                   "prepare_seconds": context.seconds, "stages": STAGES}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        store.set_status("finished", best_fitness=(final.get("best") or {}).get("fitness"),
                         best_key=(final.get("best") or {}).get("plan_key"))
        write_report(run_dir, summary, store.generations(), budget.to_dict())
        print_summary(console, summary, budget)
        console.print(f"report: {run_dir / 'report.md'}")
        return 0
    except BaseException as err:
        store.set_status("interrupted")
        if isinstance(err, KeyboardInterrupt):  # Ctrl-C: say how to go on (what was evaluated is in run.db)
            err_console.print(f"interrupted; what was evaluated is kept. Resume with: "
                              f"python main.py --resume {shlex.quote(str(run_dir))}", soft_wrap=True)
        raise
    finally:
        if workers is not None:
            workers.close()  # the actors go; a cluster we started goes with them
