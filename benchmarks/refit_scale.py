"""Cost of the exact least-squares reconstruction at a real shape (issue 19: LLaMA-2-70B on one H200).

    python benchmarks/refit_scale.py                          # 70B shape, CUDA: needs ~135 GiB of GPU memory
    python benchmarks/refit_scale.py --shape toy --device cpu # any machine, seconds (tries the script out)

What the search's finalize and `prune` do, on a random-weight model of the shape (bf16 on CUDA),
from a config-only directory: calibration statistics and Wanda-sp on 64 x 512 random tokens, the
uniform plan at --rate, then the in-place pruning with each layer re-fitted exactly just before it
is sliced (`PruningContext.prune_in_place`, `--reconstruct ls`). Measured: that pass's wall time,
the process's peak GPU memory over the dense weights, and `plan`'s estimate for the same stage.
With --compare-off the model is drawn again and pruned in place without reconstruction, so the
difference is the reconstruction's own cost. Perplexities of random weights are meaningless; the
pruned model's logits are only checked finite.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import RESULTS, machine  # noqa: E402
from benchmarks.scale_check import SHAPES, config_dir  # noqa: E402
from pruning.context import Reconstruction, build_context  # noqa: E402
from pruning.data import TokenWindows  # noqa: E402
from pruning.loading import load_model  # noqa: E402
from pruning.prepare import PruneSettings, make_budget, make_space  # noqa: E402
from pruning.resources import RunShape, refit_bytes  # noqa: E402

GiB = 2**30


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak(device: str) -> float:
    return torch.cuda.max_memory_allocated() / GiB if device.startswith("cuda") else float("nan")


_PATCHED: list = []
PEAK = [0]  # the process's peak GPU memory while phases reset the counter (bytes)
PHASE_PEAKS: dict = {}


def timed_phases(device: str) -> dict:
    """Wall time (synchronized) inside the refit's phases: streaming layers, observing projections
    (the statistics), parking them in CPU RAM, and the solves. Instrumentation of this benchmark only."""
    from pruning import layer_stream, refit_pass

    cuda = device.startswith("cuda")
    PEAK[0] = 0
    totals = {"stream.run (layers advancing)": 0.0, "stream.observe (statistics)": 0.0,
              "park A, C in CPU RAM": 0.0, "solve (fp64 Cholesky)": 0.0}

    def wrap(owner, attr, name):
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            sync(device)
            if cuda:  # the peak inside this phase (the process peak so far is kept aside first)
                PEAK[0] = max(PEAK[0], torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync(device)
                totals[name] += time.perf_counter() - t
                if cuda:
                    inside = torch.cuda.max_memory_allocated()
                    PEAK[0] = max(PEAK[0], inside)
                    peaks[name] = max(peaks.get(name, 0.0), inside / GiB)

        setattr(owner, attr, timed)
        _PATCHED.append((owner, attr, original))

    peaks = PHASE_PEAKS
    peaks.clear()
    wrap(layer_stream.LayerStream, "run", "stream.run (layers advancing)")
    wrap(layer_stream.LayerStream, "observe", "stream.observe (statistics)")
    wrap(refit_pass.PinnedParking, "park", "park A, C in CPU RAM")
    wrap(refit_pass, "solve_refit", "solve (fp64 Cholesky)")
    return totals


def untimed_phases() -> None:
    while _PATCHED:
        owner, attr, original = _PATCHED.pop()
        setattr(owner, attr, original)


def one_run(folder: Path, args, reconstruct: str) -> dict:
    device = args.device
    started = time.perf_counter()
    loaded = load_model(str(folder), dtype="bfloat16", device=device, random_weights=True)
    model = loaded.model
    sync(device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / GiB
    row = {"reconstruct": reconstruct, "load_s": time.perf_counter() - started, "dense_weights_gib": weights}
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.calib_samples, args.calib_seqlen), generator=torch.Generator().manual_seed(0))
    windows = TokenWindows(ids, "random", "validation")
    settings = PruneSettings(metric="wanda-sp", reconstruct=reconstruct)  # as measured
    space = make_space(model, settings)
    started = time.perf_counter()
    context, _ = build_context(model, space, "wanda-sp", windows, cache_dir=None, batch_size=4,
                               reconstruction=Reconstruction(reconstruct))
    sync(device)
    row["calibration_s"] = time.perf_counter() - started
    budget = make_budget(space, None, args.rate, "layer")
    plan = context.uniform_plan(budget)
    run_shape = RunShape(calib_samples=args.calib_samples, calib_seqlen=args.calib_seqlen, reconstruct=reconstruct,
                         search=False)
    if reconstruct == "ls":
        row["plan_estimate_gib"] = weights + refit_bytes(space, plan, run_shape, 2, table=False) / GiB
    if device.startswith("cuda"):
        row["allocated_before_gib"] = torch.cuda.memory_allocated() / GiB
        torch.cuda.reset_peak_memory_stats()
    layers_done = []
    phases = timed_phases(device) if reconstruct == "ls" else {}
    started = time.perf_counter()

    def progress(done, total):
        layers_done.append((done, time.perf_counter() - started))
        if done % 10 == 0 or done == total:
            print(f"  {reconstruct}: unit {done}/{total} at {layers_done[-1][1]:.1f} s, peak {peak(device):.2f} GiB",
                  flush=True)

    with torch.inference_mode():
        pruned = context.prune_in_place(plan, progress=progress)
    sync(device)
    row["prune_in_place_s"] = time.perf_counter() - started
    row["phases_s"] = {name: round(seconds, 2) for name, seconds in phases.items()}
    untimed_phases()
    row["peak_gib"] = max(peak(device), PEAK[0] / GiB) if device.startswith("cuda") else float("nan")
    row["phase_peaks_gib"] = {name: round(v, 3) for name, v in PHASE_PEAKS.items()}
    PEAK[0] = 0
    row["peak_over_dense_gib"] = row["peak_gib"] - weights
    row["pruned_weights_gib"] = sum(p.numel() * p.element_size() for p in pruned.parameters()) / GiB
    with torch.inference_mode():
        logits = pruned(ids[:1, :128].to(next(pruned.parameters()).device)).logits
    row["pruned_logits_finite"] = bool(torch.isfinite(logits).all())
    print(json.dumps(row), flush=True)
    del context, pruned, model, loaded, logits
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-2-70b", choices=sorted(SHAPES))
    parser.add_argument("--layers", type=int, default=None, help="depth (default: the config's)")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--calib-seqlen", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compare-off", action="store_true", help="also prune in place without reconstruction")
    parser.add_argument("--out", default=str(RESULTS / "refit_scale.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = config_dir(args.shape, args.layers, Path(work), "model")
        result = {"machine": machine(), "args": vars(args), "runs": [one_run(folder, args, "ls")]}
        if args.compare_off:
            result["runs"].append(one_run(folder, args, "off"))
    Path(args.out).write_text(json.dumps(result, indent=2))
    ok = all(r["pruned_logits_finite"] for r in result["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
