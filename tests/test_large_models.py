"""Issue 11 end to end on CPU: the user's commands on a config-only model directory, split between
CPU RAM and disk by accelerate, give the same pruned checkpoint as the unsplit run; `plan` counts
the 70B configs exactly; errors are one line; logs get one line per stage."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import main
from tests.test_placement import TINY

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture
def tiny_dir(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**TINY, "num_hidden_layers": 6}))
    return folder


def search(model_dir: Path, out: Path, *extra: str) -> int:
    return main.main(["--model", str(model_dir), "--random-weights", "--rate", "0.4", "--agent", "classic",
                      "--population", "2", "--generations", "2", "--offspring", "2", "--calib-samples", "4",
                      "--fitness-tokens", "256", "--fitness-seqlen", "64", "--final-eval-windows", "2",
                      "--eval-seqlen", "64", "--zero-shot", "off", "--timing", "off", "--out", str(out), *extra])


def test_search_split_over_cpu_and_disk_gives_the_unsplit_checkpoint(tiny_dir, tmp_path, capsys, shared_data_dir):
    from transformers import AutoModelForCausalLM

    assert search(tiny_dir, tmp_path / "whole") == 0
    zero_shot = ["--zero-shot", "on", "--eval-limit", "2", "--data-dir", shared_data_dir] if shared_data_dir else []
    assert search(tiny_dir, tmp_path / "split", "--max-memory", "cpu=400KB", *zero_shot) == 0
    log = capsys.readouterr().err
    assert "disk:" in log and "units offloaded" in log  # the placement line, before calibration
    assert log.index("placement:") < log.index("calibration ...")
    assert "calibration done in" in log and "generation 1: best" in log and "finalize done in" in log
    assert (tmp_path / "split" / "offload" / "index.json").exists()
    whole = json.loads((tmp_path / "whole" / "model" / "pruning.json").read_text())
    split = json.loads((tmp_path / "split" / "model" / "pruning.json").read_text())
    assert whole["plan"] == split["plan"]
    ids = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(5))
    logits = []
    for run in ("whole", "split"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / run / "model", trust_remote_code=True)
        with torch.no_grad():
            logits.append(model(ids).logits)
    assert torch.equal(logits[0], logits[1])
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert set(summary["prepare_seconds"]) == {"statistics", "importance", "reference pass"}
    if shared_data_dir:  # lm-eval on the offloaded dense, masked and pruned models
        assert set(summary["final"]["zero_shot"]) == {"dense", "uniform wanda-sp", "uniform obs + refit", "searched"}
        assert all(0 <= r["average"] <= 1 for r in summary["final"]["zero_shot"].values())


@pytest.mark.parametrize("name,dense", [("llama-2-70b", 68_976_648_192), ("llama-3-70b", 70_553_706_496)])
def test_plan_counts_the_70b_configs_exactly(name, dense, tmp_path, capsys):
    out = tmp_path / "plan.json"
    started = time.perf_counter()
    code = main.main(["plan", "--model", str(FIXTURES / name), "--budget", "35b", "--max-memory", "0=139GiB",
                      "--json", str(out)])
    assert time.perf_counter() - started < 60  # no weights: seconds, not a download
    result = json.loads(out.read_text())
    assert result["dense_params"] == dense
    assert result["target_params"] == 35_000_000_000
    assert result["average_rate"] == pytest.approx((dense - 35e9) / (dense - 2 * 8192 * (32000 if "2" in name else 128256) - 8192))
    assert [row[0] for row in result["uniform_plan"]][0].startswith("0")
    assert all(row[2] == 8 for row in result["uniform_plan"])  # query mode keeps every KV head
    assert code == 0 and result["fits"]  # a hypothetical H200: the dense model fits one GPU
    assert set(result["placement"].values()) == {"0"}
    text = capsys.readouterr().out
    assert "untied" in text and "memory per stage" in text


def test_plan_says_when_a_machine_is_too_small(capsys):
    code = main.main(["plan", "--model", str(FIXTURES / "llama-2-70b"), "--budget", "35b",
                      "--max-memory", "0=10GiB,cpu=8GiB"])
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at 80 columns
    assert "disk:" in out and "units offloaded" in out  # most of it would live on disk
    assert code == 1 and "does not fit" in out and "save: needs" in out  # a 5 GB shard on top of 8 GiB of layers


def test_an_alias_that_cannot_be_fetched_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    code = main.main(["prune", "--model", "llama-2-70b", "--rate", "0.2"])
    err = capsys.readouterr().err
    assert code == 2
    assert time.perf_counter() - started < 10  # no 24 s of retries
    assert "HF_TOKEN" in err and "--model /local/dir" in err and "huggingface.co/meta-llama/Llama-2-70b-hf" in err
    assert err.count("error:") == 1 and "Retrying" not in err


def test_an_impossible_budget_fails_before_loading(tiny_dir, capsys):
    code = main.main(["prune", "--model", str(tiny_dir), "--random-weights", "--budget", "1k"])
    assert code == 2
    assert "below the embeddings" in capsys.readouterr().err
