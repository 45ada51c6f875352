"""Memory of the user's commands on a random ~0.75B-parameter Llama (bf16, 1.5 GB), on CPU.

    python benchmarks/memory_check.py [--out benchmarks/results/memory_check.json]

Each command runs in its own process; its peak RSS comes from wait4:
- load-only: the CLI's imports plus loading the model (the floor every command pays);
- search: `main.py --model DIR --random-weights --rate 0.2 --agent classic ...` through finalize
  (dense / uniform under masks / in-place pruning / timing / save). Target: <= load-only + 0.25 x
  the dense weights;
- prune, unconstrained and with `--max-memory cpu=700MB` (disk offload): the two checkpoints must
  be identical, tensor by tensor.

    python benchmarks/memory_check.py --saved [--calib-samples 16]

- saved: a 0.74B Llama (12 layers, hidden 2048, MLP 5632, 16/4 heads) *saved* as safetensors in
  the compute dtype, read from disk as a user's checkpoint is (transformers maps the file: the
  weights are file pages, not memory of the process's own); load-only vs the whole search
  `--budget 50% --agent classic --population 2 --generations 0` with the default reconstruction.
  Target: <= load-only + 0.25 x the dense weights.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine  # noqa: E402
from benchmarks.scale_check import run  # noqa: E402

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1536,
          "intermediate_size": 4096, "num_attention_heads": 12, "num_key_value_heads": 4, "num_hidden_layers": 26,
          "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
          "tie_word_embeddings": False, "hidden_act": "silu"}
LOAD_ONLY = ("import sys; sys.path.insert(0, {root!r}); import commands.search, commands.prune; "
             "from pruning.loading import load_model; load_model({model!r}, device='cpu', random_weights=True)")


def identical(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    def tensors(folder: Path) -> dict:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    x, y = tensors(a), tensors(b)
    return set(x) == set(y) and all(x[k].equal(y[k]) for k in x)


SAVED_CONFIG = {**CONFIG, "hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 16,
                "num_key_value_heads": 4, "num_hidden_layers": 12}
SAVED_MAKE = ("import sys; sys.path.insert(0, {root!r}); from pruning.loading import byte_tokenizer, load_model; "
              "m = load_model({model!r}, device='cpu', random_weights=True, dtype={dtype!r}).model; "
              "m.save_pretrained({model!r}); byte_tokenizer().save_pretrained({model!r})")
# the floor reads every weight once: a mapped checkpoint's pages count in RSS only once touched, and
# any command that computes touches them all
SAVED_LOAD_ONLY = ("import sys; sys.path.insert(0, {root!r}); import commands.search, commands.prune; "
                   "from pruning.loading import load_model; m = load_model({model!r}, device='cpu').model; "
                   "[float(p.float().sum()) for p in m.parameters()]")


def saved_checkpoint_check(out: Path, calib_samples: int) -> int:
    """The search on a checkpoint read from disk (see the module's docstring)."""
    from pruning.loading import resolve_dtype

    work = Path(tempfile.mkdtemp(prefix="memory-saved-"))
    model_dir = work / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(SAVED_CONFIG, indent=2))
    dtype = resolve_dtype("auto", "cpu")
    results: dict = {"machine": machine(), "config": SAVED_CONFIG, "dtype": str(dtype), "calib_samples": calib_samples}
    try:
        # safetensors in the dtype the CLI will compute in, and a tokenizer, made by another process: a
        # child's peak RSS counts what its parent held when it was started
        made = run(["-c", SAVED_MAKE.format(root=str(ROOT), model=str(model_dir), dtype=str(dtype).split(".")[-1])],
                   work / "make.log", script=None)
        if made["returncode"]:
            raise RuntimeError(f"making the checkpoint failed: {(work / 'make.log').read_text()[-2000:]}")
        results["load_only"] = run(["-c", SAVED_LOAD_ONLY.format(root=str(ROOT), model=str(model_dir))],
                                   work / "load.log", script=None)
        results["search"] = run(["--model", str(model_dir), "--budget", "50%", "--agent", "classic",
                                 "--population", "2", "--generations", "0", "--calib-samples", str(calib_samples),
                                 "--final-eval-windows", "4", "--zero-shot", "off", "--timing", "off",
                                 "--out", str(work / "search")], work / "search.log")
        summary = json.loads((work / "search" / "summary.json").read_text())
        dense_gb = dtype.itemsize * summary["final"]["params"]["dense"] / 2**30
        results["dense_weights_gb"] = dense_gb
        results["search_over_load_only_x_dense"] = (results["search"]["peak_rss_gb"]
                                                    - results["load_only"]["peak_rss_gb"]) / dense_gb
        results["final_ppl"] = summary["final"]["ppl"]
    finally:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
        shutil.rmtree(work, ignore_errors=True)
    for key in ("load_only", "search"):
        if key in results:
            print(f"{key:16s} rc {results[key]['returncode']}  peak RSS {results[key]['peak_rss_gb']:.2f} GB  "
                  f"wall {results[key]['wall_s']:.0f} s")
    print(f"search peak = load-only + {results.get('search_over_load_only_x_dense', float('nan')):.3f} x dense weights")
    return 0 if results.get("search", {}).get("returncode") == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--max-memory", default="cpu=700MB")
    parser.add_argument("--saved", action="store_true", help="the saved-checkpoint search instead (see above)")
    parser.add_argument("--calib-samples", type=int, default=64, help="with --saved")
    args = parser.parse_args()
    if args.saved:
        return saved_checkpoint_check(Path(args.out or RESULTS / "memory_check_saved.json"), args.calib_samples)
    args.out = args.out or str(RESULTS / "memory_check.json")
    work = Path(tempfile.mkdtemp(prefix="memory-check-"))
    model = work / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(CONFIG, indent=2))
    results: dict = {"machine": machine(), "config": CONFIG}
    try:
        results["load_only"] = run(["-c", LOAD_ONLY.format(root=str(ROOT), model=str(model))], work / "load.log",
                                   script=None)
        results["search"] = run(["--model", str(model), "--random-weights", "--rate", "0.2", "--agent", "classic",
                                 "--population", "4", "--generations", "2", "--offspring", "4",
                                 "--final-eval-windows", "8", "--zero-shot", "off", "--timing", "on",
                                 "--out", str(work / "search")], work / "search.log")
        prune = ["prune", "--model", str(model), "--random-weights", "--rate", "0.2", "--no-eval"]
        results["prune"] = run([*prune, "--out", str(work / "whole" / "model")], work / "prune.log")
        results["prune_offloaded"] = run([*prune, "--max-memory", args.max_memory,
                                          "--out", str(work / "split" / "model")], work / "prune-split.log")
        placement = [l for l in (work / "prune-split.log").read_text().splitlines() if "placement:" in l]
        results["prune_offloaded"]["placement"] = placement[:1]
        results["identical_checkpoints"] = identical(work / "whole" / "model", work / "split" / "model")
        dense_gb = 2 * json.loads((work / "search" / "summary.json").read_text())["final"]["params"]["dense"] / 2**30
        floor = results["load_only"]["peak_rss_gb"]
        results["dense_weights_gb"] = dense_gb
        results["search_over_load_only_x_dense"] = (results["search"]["peak_rss_gb"] - floor) / dense_gb
    finally:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
        shutil.rmtree(work, ignore_errors=True)
    for key in ("load_only", "search", "prune", "prune_offloaded"):
        if key in results:
            print(f"{key:16s} rc {results[key]['returncode']}  peak RSS {results[key]['peak_rss_gb']:.2f} GB  "
                  f"wall {results[key]['wall_s']:.0f} s")
    print(f"search peak = load-only + {results.get('search_over_load_only_x_dense', float('nan')):.3f} x dense weights; "
          f"checkpoints identical: {results.get('identical_checkpoints')}")
    return 0 if results.get("identical_checkpoints") else 1


if __name__ == "__main__":
    sys.exit(main())
