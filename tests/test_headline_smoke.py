"""The headline benchmark's fast mode on the tiny random Llama: every method present at the
rate, on budget, with perplexities and timings; the markdown table and both plots written."""
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image

REPO = Path(__file__).resolve().parent.parent


def test_headline_smoke_table_shape_and_budget(tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/headline.py", "--smoke", "--rates", "0.3", "--out", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "headline.json").read_text())["table"]
    sys.path.insert(0, str(REPO))
    from benchmarks.headline import FIXED, SEARCHES

    assert [r["method"] for r in rows] == ["dense", *FIXED, *SEARCHES]
    dense = rows[0]
    for row in rows[1:]:
        assert row["rate"] == 0.3
        assert row["total_params"] <= row["budget_params"] < dense["total_params"]  # every method meets the budget
        assert row["block_params"] < dense["block_params"]
        assert row["ppl512"] > 0 and row["ppl128"] > 0
        assert row["decode_speedup"] > 0 and row["prefill_speedup"] > 0
    searches = [r for r in rows if r["method"] in SEARCHES]
    assert all(r["evaluations"] > 0 and len(r["ppl512_per_seed"]) == 1 for r in searches)
    module = next(r for r in searches if "module" in r["method"])
    assert module["granularity"] == "module" and len(module["rates"]) == 2 * len(rows[1]["rates"])
    table = (tmp_path / "headline.md").read_text()
    assert table.count("\n| 0.3 |") == len(FIXED) + len(SEARCHES)
    for png in ("headline_ppl_vs_rate.png", "headline_rate_profiles.png"):
        assert matplotlib.image.imread(tmp_path / png).shape[0] > 100


def test_more_seeds_extend_a_search_row_and_drop_its_stale_measurements(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks.common import ResultStore
    from benchmarks.headline import ppl_row_is_complete, stale_keys

    assert not ppl_row_is_complete(None, "random search", [0])
    assert ppl_row_is_complete({"seeds": [0, 1, 2]}, "random search", [0, 2])
    assert not ppl_row_is_complete({"seeds": [0]}, "random search", [0, 1, 2])  # a rerun with more seeds extends it
    assert ppl_row_is_complete({"ppl512": 47.0}, "uniform wanda-sp", [0, 1, 2])  # one-shot rows have no seeds
    store = ResultStore("headline", tmp_path)
    store.put("0.2|random search|search", {"best_plan": [[0, 3]]})
    store.put("0.2|random search|timing", {"decode": 1})
    store.put("0.2|random search|zeroshot", {"average": 0.4})
    assert stale_keys(store, 0.2, "random search", [[0, 3]]) == []  # same best model: measurements stand
    stale = stale_keys(store, 0.2, "random search", [[1, 0]])
    assert stale == ["0.2|random search|timing", "0.2|random search|zeroshot"]
    for key in stale:
        store.drop(key)
    assert not ResultStore("headline", tmp_path).has("0.2|random search|timing")  # dropped on disk too
