"""Scale check: the user's own commands on a random-weight model of a real shape (LLaMA-2-70B by
default), from a config-only directory, each in its own process.

    python benchmarks/scale_check.py                       # 70B shape: needs a GPU with ~140 GB (H200)
    python benchmarks/scale_check.py --shape toy           # any CPU, a few seconds (CI runs this)

1. search: `main.py --model DIR --random-weights --budget B --agent classic ... --save off` at full
   depth: calibration, importance, fitness evaluations, finalize (dense / uniform under masks /
   in-place pruning / timing). Stage times and peak GPU memory come from the run's summary.json.
2. save: `main.py prune --model DIR --random-weights ...` at `--save-layers` depth (a 70B checkpoint
   does not fit a 64 GB disk): time of the sharded save, shards written, peak RSS of that process.

Results: JSON (--out), with the machine. Exit 1 if a command fails.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine  # noqa: E402

SHAPES = {
    "llama-2-70b": {"config": ROOT / "tests" / "fixtures" / "llama-2-70b" / "config.json", "budget": "35b"},
    "llama-3-70b": {"config": ROOT / "tests" / "fixtures" / "llama-3-70b" / "config.json", "budget": "35b"},
    # Other families at real shapes (published config values; issue 14)
    "qwen3-32b": {"config": ROOT / "tests" / "fixtures" / "qwen3-32b" / "config.json", "budget": "50%"},
    "gemma-3-27b": {"config": ROOT / "tests" / "fixtures" / "gemma-3-27b" / "config.json", "budget": "50%"},
    "phi-3-medium": {"config": ROOT / "tests" / "fixtures" / "phi-3-medium" / "config.json", "budget": "50%"},
    "toy": {"config": None, "budget": "50%"},
}
TOY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "intermediate_size": 512,
       "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 8, "vocab_size": 1000,
       "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu"}
STAGE_LINE = re.compile(r"\] (.+) done in ([0-9.]+) s(?:, peak GPU memory of the process ([0-9.]+) GiB)?(?:, peak RSS ([0-9.]+) GB)?")


def config_dir(shape: str, layers: int | None, work: Path, name: str) -> Path:
    """A config-only model directory (no weights, no tokenizer)."""
    config = dict(TOY) if SHAPES[shape]["config"] is None else json.loads(SHAPES[shape]["config"].read_text())
    if layers:
        config["num_hidden_layers"] = layers
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def run(argv: list[str], log: Path, script: str | None = "main.py") -> dict:
    """One command (`python main.py ARGV`, or `python ARGV` with script=None) in its own process;
    its stage lines, wall time and peak RSS."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as fh:
        command = [sys.executable, *([str(ROOT / script)] if script else []), *argv]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    stages = [{"stage": m.group(1), "seconds": float(m.group(2)),
               "gpu_peak_gib": float(m.group(3)) if m.group(3) else None,
               "peak_rss_gb": float(m.group(4)) if m.group(4) else None} for m in STAGE_LINE.finditer(text)]
    return {"argv": argv, "returncode": returncode, "wall_s": time.perf_counter() - started,
            "peak_rss_gb": usage.ru_maxrss / 2**20, "stages": stages, "tail": text[-3000:] if returncode else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-2-70b", choices=sorted(SHAPES))
    parser.add_argument("--layers", type=int, default=None, help="depth of the search run (default: the config's)")
    parser.add_argument("--save-layers", type=int, default=20, help="depth of the save run (0 = skip)")
    parser.add_argument("--budget", default=None)
    parser.add_argument("--evaluations", default="4,1,4", help="population,generations,offspring")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-memory", default=None)
    parser.add_argument("--offload-layers", type=int, default=0,
                        help="also a search at this depth with --max-memory --offload-max-memory (0 = skip)")
    parser.add_argument("--offload-max-memory", default="0=20GiB")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--out", default=str(RESULTS / "scale_check.json"))
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(os.environ.get("TMPDIR", "/tmp")) / f"scale-check-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    budget = args.budget or SHAPES[args.shape]["budget"]
    population, generations, offspring = args.evaluations.split(",")
    common = ["--random-weights", "--device", args.device, "--calib-samples", "64", "--batch-size", "4"]
    if args.max_memory:
        common += ["--max-memory", args.max_memory]
    results = {"machine": machine(), "shape": args.shape, "budget": budget}
    failed = False

    def write() -> None:  # after every part: a run cut short still leaves what it measured
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))

    try:
        model = config_dir(args.shape, args.layers, work, "model")
        plan = run(["plan", "--model", str(model), "--budget", budget, "--json", str(work / "plan.json"),
                    *(["--max-memory", args.max_memory] if args.max_memory else []), "--device", args.device],
                   work / "plan.log")
        results["plan"] = json.loads((work / "plan.json").read_text()) if (work / "plan.json").exists() else plan

        search = run(["--model", str(model), "--budget", budget, *common, "--agent", "classic",
                      "--population", population, "--generations", generations, "--offspring", offspring,
                      "--final-eval-windows", "8", "--zero-shot", "off", "--timing", "on", "--save", "off",
                      "--out", str(work / "search")], work / "search.log")
        summary_path = work / "search" / "summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            search["summary"] = {k: summary.get(k) for k in ("evaluations", "prepare_seconds", "final", "best")}
            peaks = [s["gpu_peak_gib"] for s in summary.get("stages", []) if s.get("gpu_peak_gib") is not None]
            search["gpu_peak_gib"] = max(peaks) if peaks else None
        results["search"] = search
        failed |= search["returncode"] != 0
        write()

        if args.save_layers:
            shallow = config_dir(args.shape, args.save_layers, work, "model-shallow")
            out = work / "prune" / "model"
            save = run(["prune", "--model", str(shallow), "--rate", "0.5", *common, "--no-eval", "--out", str(out)],
                       work / "prune.log")
            files = sorted(out.glob("*.safetensors")) if out.exists() else []
            save["checkpoint"] = {"layers": args.save_layers, "shards": len(files),
                                  "bytes": sum(f.stat().st_size for f in files),
                                  "index": (out / "model.safetensors.index.json").exists()}
            results["save"] = save
            failed |= save["returncode"] != 0
            write()

        if args.offload_layers:
            deep = config_dir(args.shape, args.offload_layers, work, "model-offload")
            offload = run(["--model", str(deep), "--budget", "50%", "--random-weights", "--device", args.device,
                           "--max-memory", args.offload_max_memory, "--agent", "classic", "--population", "2",
                           "--generations", "1", "--offspring", "2", "--final-eval-windows", "4", "--zero-shot", "off",
                           "--timing", "off", "--save", "off", "--out", str(work / "offload")], work / "offload.log")
            placement = [line for line in (work / "offload.log").read_text().splitlines() if "placement:" in line]
            offload["placement"] = placement[:1]
            results["offload"] = offload
            failed |= offload["returncode"] != 0
    finally:
        write()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: results[k] for k in results if k != "plan"}, indent=1, default=str)[:6000])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
