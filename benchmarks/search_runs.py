"""Benchmark of the search (issue: the self-pruning search) on the embedded SmolLM2-135M.

    python benchmarks/search_runs.py [--data-dir ../shared/data] [--rates 0.2 0.5] [--agents local classic]

For each (agent, rate): runs the CLI exactly as a user would (the bare preset is `python main.py`
= local agent, rate 0.2), in a child process whose peak RSS is read from the kernel, then reads
the run database: wall time, share of time in LLM calls vs fitness evaluation, per-role outcome
rates, best vs uniform Wanda-sp on WikiText-2 test. Results: benchmarks/results/search_runs.json
(finished entries are skipped on a rerun).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, ResultStore, machine  # noqa: E402
from store.run_store import RunStore  # noqa: E402


def run_once(agent: str, rate: float, data_dir: str | None, extra: list[str]) -> dict:
    out = RESULTS / f"search-{agent}-rate{rate}"
    cmd = [sys.executable, "main.py", "--agent", agent, "--rate", str(rate), "--out", str(out), *extra]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, COLUMNS="120"))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((out / "summary.json").read_text())
    store = RunStore(out / "run.db")
    fitness_s = store.evaluation_seconds()
    llm_s = summary["llm"]["latency"]
    outcomes = summary["outcomes"]
    rates = {}
    for role, counts in outcomes.items():
        finals = {k: v for k, v in counts.items() if k in ("used", "repaired", "retried", "fallback")}
        total = sum(finals.values()) or 1
        rates[role] = {k: round(v / total, 3) for k, v in finals.items()} | {"calls": total}
    return {
        "command": " ".join(["python", *cmd[1:]]), "wall_s": wall,
        "peak_rss_gb": max(peak_kib, before) / 2**20, "fitness_s": fitness_s, "llm_s": llm_s,
        "llm_share": llm_s / wall, "fitness_share": fitness_s / wall, "evaluations": summary["evaluations"],
        "llm_calls": summary["llm"]["calls"], "tokens": summary["llm"]["prompt"] + summary["llm"]["completion"],
        "outcome_rates": rates, "final": summary["final"], "best_origin": summary["best"]["origin"],
        "best_rates": summary["best"]["rates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--agents", nargs="+", default=["local", "classic"])
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more CLI options for every run")
    args = parser.parse_args()
    store = ResultStore("search_runs")
    store.put("machine", machine())
    for agent in args.agents:
        for rate in args.rates:
            key = f"{agent}-rate{rate}"
            if store.has(key):
                continue
            store.put(key, run_once(agent, rate, args.data_dir, args.extra))
            print(key, json.dumps({k: store.data[key][k] for k in ("wall_s", "peak_rss_gb", "llm_share", "evaluations")}),
                  store.data[key]["final"]["ppl"], flush=True)


if __name__ == "__main__":
    main()
