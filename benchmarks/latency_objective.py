"""The latency objective (issue 22): does the latency table predict measured prefill, and what does
--latency-weight buy at equal parameters?

Give it finished search runs (`main.py ... --out DIR`, e.g. one with `--latency-weight 0` and one
with 1). In one process, on the embedded model in the runs' dtype: the latency table is measured
afresh; the dense model, the uniform plan and each run's champion, plus up to `--candidates` other
plans the runs scored (for the prediction's accuracy), are pruned and timed in interleaved rounds
(prefill of 1 x 512 and 1 x 128 tokens, median per plan), so machine drift hits all alike. Prints
and writes, per plan: parameters over dense, predicted and measured prefill over dense; the
Spearman rank correlation of predicted vs measured; and each run's champion vs uniform.

    python benchmarks/latency_objective.py /tmp/latbench/w0 /tmp/latbench/w1 --rate 0.2
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import RESULTS, machine  # noqa: E402
from evaluation.latency_table import measure  # noqa: E402
from evaluation.timing import time_model  # noqa: E402
from pruning.adapter import DecoderAdapter  # noqa: E402
from pruning.budget import budget_from_args  # noqa: E402
from pruning.context import PruningContext  # noqa: E402
from pruning.data import TokenWindows  # noqa: E402
from pruning.genome import PruningPlan  # noqa: E402
from pruning.importance import collect_activation_stats, compute_importance  # noqa: E402
from pruning.loading import load_model, resolve_dtype  # noqa: E402
from pruning.space import PruningSpace  # noqa: E402


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(xs):
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0.0] * len(xs)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--out", default=str(RESULTS / "latency_objective.json"))
    args = parser.parse_args()

    dtype = resolve_dtype(args.dtype, "cpu")
    model = load_model("smollm2-135m", dtype=dtype, device="cpu").model
    space = PruningSpace(DecoderAdapter(model).shape())
    stats = collect_activation_stats(model, TokenWindows(torch.randint(0, 1000, (2, 64)), "t", "v"))
    context = PruningContext(model, space, stats, compute_importance(model, stats, "wanda-sp"))
    budget = budget_from_args(space.shape, None, args.rate, space.min_total_params("layer"))
    table = measure(space, torch.device("cpu"), dtype, seqlen=512)

    plans = {"dense": PruningPlan.keep_all(space.num_layers), "uniform": context.uniform_plan(budget)}
    champions = {}
    for run in args.runs:
        summary = json.loads((Path(run) / "summary.json").read_text())
        weight = (summary.get("objective") or {}).get("latency_weight", 0)
        name = f"champion w={weight:g} ({Path(run).name})"
        plans[name] = PruningPlan.from_list(summary["best"]["plan"])
        champions[name] = weight
        with sqlite3.connect(Path(run) / "run.db") as db:
            rows = db.execute("select distinct plan from candidates order by rowid desc").fetchall()
        for k, (plan,) in enumerate(rows[: args.candidates // len(args.runs)]):
            plans.setdefault(f"candidate {Path(run).name}:{k}", PruningPlan.from_list(json.loads(plan)))
    models = {name: model if name == "dense" else context.prune(plan) for name, plan in plans.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"1x512": [], "1x128": []} for name in plans}
    for _ in range(args.rounds):
        for name, pruned in models.items():
            result = time_model(pruned, batch_sizes=(1,), seqlens=(128, 512), decode_tokens=1, repeats=3, warmup=1)
            for key in ("1x512", "1x128"):
                times[name][key].append(result["prefill"][key]["median_s"])
    dense = {key: statistics.median(times["dense"][key]) for key in ("1x512", "1x128")}
    rows = []
    for name, plan in plans.items():
        row = {"plan": name, "params": space.total_params(plan) / space.shape.total_params(),
               "predicted": table.ratio(space, plan),
               **{f"measured {key}": statistics.median(times[name][key]) / dense[key] for key in dense}}
        rows.append(row)
        print(f"{name:44s} params {row['params']:.3f}  predicted {row['predicted']:.3f}  measured 1x512 "
              f"{row['measured 1x512']:.3f}  1x128 {row['measured 1x128']:.3f}")
    pruned_rows = [r for r in rows if r["plan"] != "dense"]
    rho = spearman([r["predicted"] for r in pruned_rows], [r["measured 1x512"] for r in pruned_rows])
    print(f"Spearman (predicted vs measured 1x512, {len(pruned_rows)} pruned plans): {rho:.3f}")
    Path(args.out).write_text(json.dumps({"machine": machine(), "dtype": str(dtype), "rate": args.rate,
                                          "rounds": args.rounds, "rows": rows, "spearman": rho,
                                          "dense_s": dense}, indent=1))


if __name__ == "__main__":
    main()
