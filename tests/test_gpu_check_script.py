"""benchmarks/gpu_check.py is run by hand on CUDA machines; here it runs on CPU (--device cpu) so
that it cannot rot between GPU sessions: same checks, tiny model, a toy shape."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_tiny_checks_and_shape_timing_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run("--device", "cpu", "--stages", "tiny,shape", "--shape", "smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["tiny checks"]) == {"uniform 0.5 (layer)", "mixed 0.35 (module)"}
    for row in result["tiny checks"].values():
        # masked == sliced holds on any device; the device comparison means something only where
        # the second device is a GPU (here both sides are the CPU: only its plumbing runs)
        assert row["max |masked - pruned| (cuda fp32)"] < 1e-4
        assert {"same selection cpu vs cuda", "perplexity cuda", "perplexity cpu"} <= set(row)
        if torch.cuda.is_available():
            assert row["same selection cpu vs cuda"] is True
            assert row["perplexity cuda"] == pytest.approx(row["perplexity cpu"], rel=1e-4)
    timing = result["timing smoke"]
    assert timing["uniform 0.5"]["params"] < timing["uniform 0.2"]["params"] < timing["uniform 0.2"]["dense_params"]
    speedup = timing["uniform 0.5"]["speedup"]
    assert speedup["ideal"] > 1.4 and {"prefill 2x64", "decode"} <= set(speedup)
    # A rerun skips finished entries (resumable) and leaves them unchanged.
    again = run("--device", "cpu", "--stages", "tiny,shape", "--shape", "smoke", "--out", str(out))
    assert again.returncode == 0 and json.loads(out.read_text())["timing smoke"] == timing


def test_bad_input_is_refused_with_a_clear_message(tmp_path, capsys):
    """In process: the refusals come before any model is built."""
    sys.path.insert(0, str(SCRIPT.parent.parent))
    from benchmarks import gpu_check

    def refused(*args) -> str:
        try:
            code = gpu_check.main(list(args))
        except SystemExit as err:  # argparse's error exit
            code = err.code
        assert code == 2
        return capsys.readouterr().err

    assert "needs --data-dir" in refused("--device", "cpu", "--stages", "embedded", "--out", str(tmp_path / "x.json"))
    assert "warp" in refused("--device", "cpu", "--stages", "tiny,warp", "--out", str(tmp_path / "x.json"))
    if not torch.cuda.is_available():
        assert "CUDA is not available" in refused("--stages", "tiny", "--out", str(tmp_path / "x.json"))
