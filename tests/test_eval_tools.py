"""lm-eval on a real model with a small limit; timing; the report files."""
import json

import matplotlib.image as mpimg
import pytest

from agents.roles import classic_roles
from tests.search_fixtures import run_tiny
from tests.tiny import tiny_llama
from evaluation.report import write_report
from evaluation.timing import speedups, time_model


def test_timing_returns_positive_medians():
    model = tiny_llama()
    result = time_model(model, batch_sizes=(1, 2), seqlens=(8,), decode_tokens=4, repeats=2)
    assert set(result["prefill"]) == {"1x8", "2x8"}
    assert all(row["median_s"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"] for row in result["prefill"].values())
    assert result["decode"]["tokens_per_s"] > 0 and result["peak_memory_gb"] > 0



def test_speedups_put_the_pruned_model_in_the_numerator_of_speed():
    dense = {"prefill": {"1x8": {"median_s": 2.0}}, "decode": {"tokens_per_s": 10.0}}
    pruned = {"prefill": {"1x8": {"median_s": 0.5}}, "decode": {"tokens_per_s": 15.0}}
    ratio = speedups(dense, pruned, 200, 100)
    assert ratio == {"ideal": 2.0, "prefill 1x8": 4.0, "decode": 1.5}


def test_report_files_exist_and_parse(tmp_path):
    final_state, deps = run_tiny(tmp_path, classic_roles(), generations=2)
    best = final_state["best"]
    summary = {"run_id": "test", "best": best, "evaluations": deps.fitness.evaluations,
               "llm": deps.store.token_totals(), "outcomes": deps.store.outcome_counts(),
               "final": {"test_windows": 2, "test_seqlen": 32, "ppl": {"dense": 10.0, "uniform wanda-sp": 12.0, "searched": 11.0},
                         "params": {"dense": 1, "uniform wanda-sp": 1, "searched": 1, "budget": 1},
                         "uniform_rates": [deps.budget.average_rate] * 4,
                         "zero_shot": {"dense": {"tasks": {"boolq": {"acc": 0.5}, "piqa": {"acc": 0.6, "acc_norm": 0.7}},
                                                 "average": 0.6}}}}
    write_report(tmp_path, summary, deps.store.generations(), deps.budget.to_dict())
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["best"]["plan_key"] == best["plan_key"] and len(report["generations"]) == 3
    text = (tmp_path / "report.md").read_text()
    assert "| searched | 1 | 11.00 |" in text and "| dense | 0.500 | 0.700 | 0.600 |" in text
    for name in ("rates.png", "fitness.png"):
        image = mpimg.imread(tmp_path / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
    assert "the best seed is kept" not in text
    summary["champion"] = {"plan_key": best["plan_key"], "pool": 9, "search_best_key": "x", "margin": 0.01,
                           "seed_kept_by_margin": True}
    write_report(tmp_path, summary, deps.store.generations(), deps.budget.to_dict())
    text = (tmp_path / "report.md").read_text()
    assert "among 9 plans" in text and "by less than 1%" in text and "the best seed is kept" in text


@pytest.mark.integration
def test_lm_eval_runs_on_the_embedded_model(embedded, shared_data_dir):
    if shared_data_dir is None:
        pytest.skip("needs ../shared/data")
    from evaluation.zeroshot import zero_shot

    result = zero_shot(embedded.model, embedded.tokenizer, tasks=["boolq", "winogrande", "arc_easy"],
                       data_dir=shared_data_dir, limit=4, batch_size=4)
    assert set(result["tasks"]) == {"boolq", "winogrande", "arc_easy"}
    assert "acc_norm" in result["tasks"]["arc_easy"] and "acc_norm" not in result["tasks"]["boolq"]
    assert all(0.0 <= v <= 1.0 for row in result["tasks"].values() for v in row.values())
    # the standard error of each score (closed form for a mean: sqrt(p(1-p)/(n-1)) on 4 documents), and the count
    arc = result["tasks"]["arc_easy"]
    assert arc["acc_norm_stderr"] == pytest.approx((arc["acc_norm"] * (1 - arc["acc_norm"]) / 3) ** 0.5, abs=1e-6)
    assert result["documents"] == {"boolq": 4, "winogrande": 4, "arc_easy": 4}
