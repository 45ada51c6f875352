"""The real local agent (xllamacpp serving the embedded SmolLM2) drives a one-generation search
on the embedded model, end to end through the CLI; afterwards no server process is left."""
import json
from pathlib import Path

import pytest

from tests.test_cli import run_cli

pytestmark = pytest.mark.integration


def server_processes() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "agents.local_server" in cmdline:
                found.append(proc.name)
    return found


def test_local_agent_search_end_to_end(tmp_path, shared_data_dir):
    assert server_processes() == []
    out = tmp_path / "run"
    args = ["--agent", "local", "--rate", "0.2", "--population", "2", "--generations", "1", "--offspring", "2",
            "--fitness-tokens", "256", "--fitness-seqlen", "128", "--final-eval-windows", "1", "--eval-seqlen", "128",
            "--calib-samples", "4", "--calib-seqlen", "128", "--max-tokens", "400", "--eval-limit", "2",
            "--out", str(out)]
    if shared_data_dir:
        args += ["--data-dir", shared_data_dir]
    result = run_cli(*args, env_extra={"SELF_PRUNER_CACHE": str(tmp_path / "cache")}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["llm"]["calls"] >= 4  # initializer, selector, crosser, mutator (+ retries)
    roles = set(summary["outcomes"])
    assert roles == {"initializer", "selector", "crosser", "mutator"}
    assert summary["best"]["total_params"] <= summary["final"]["params"]["budget"]
    assert (out / "model" / "config.json").exists()
    config = (out / "config.yaml").read_text()  # the run's settings as a file --config reads back
    assert "generations: 1\n" in config and "agent: local\n" in config and "\nout:" not in config
    assert "search cost" in result.stdout
    report = (out / "report.md").read_text()
    assert "## Inference timing" in report and "## Fitness per generation" in report
    if shared_data_dir:  # the task files are there: finalize ran lm-eval on all three models
        assert "## Zero-shot accuracy" in report
        assert set(summary["final"]["zero_shot"]) == {"dense", "uniform wanda-sp", "uniform obs + refit", "searched"}
    assert server_processes() == []
