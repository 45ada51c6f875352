"""The model card a search run writes beside its checkpoint: hub metadata, and every number read from
what finalize measured (pruning.json's record, report.json's `final`)."""
import yaml

from deploy.model_card import model_card, reproduce_command


def finalize_like() -> tuple[dict, dict]:
    record = {"source_model": "llama-2-70b", "budget": {"dense_params": 1000, "target_params": 600,
                                                          "description": "rate 0.4"},
              "settings": {"metric": "obs"}, "plan": [[0, 3], [1, 5]], "genome": {"rates": [0.3, 0.5]},
              "params": {"total": 598}, "versions": {"torch": "2.x"}}
    final = {"ppl": {"dense": 5.123, "searched": 7.456}, "params": {"dense": 1000, "searched": 598},
             "test_windows": 32, "test_seqlen": 512,
             "zero_shot": {"searched": {"tasks": {"piqa": {"acc": 0.6, "acc_norm": 0.7, "acc_norm_stderr": 0.05}},
                                        "average": 0.7, "limit": 20}},
             "timing": {"dense": {"device": "cuda:0"}, "speedup": {"ideal": 1.67, "prefill 1x512": 1.41}}}
    return record, final


def test_the_card_carries_hub_metadata_and_the_measured_numbers():
    record, final = finalize_like()
    card = model_card(record, final, "python main.py --model llama-2-70b --budget 35b")
    front = yaml.safe_load(card.split("---")[1])
    assert front == {"base_model": "meta-llama/Llama-2-70b-hf", "library_name": "transformers",
                     "pipeline_tag": "text-generation", "tags": ["pruned", "structured-pruning", "self-pruner"]}
    assert "598 parameters of 1,000 (budget rate 0.4)" in card
    assert "(32 windows x 512 tokens)" in card and "| searched | 598 | 7.46 |" in card
    assert "First 20 documents per task" in card and "0.700 ± 0.050" in card
    assert "speed-up (ideal 1.67x)" in card and "| prefill 1x512 | 1.41x |" in card
    assert "| 1 | 1 | 5 | 0.500 |" in card  # the per-layer plan
    assert "trust_remote_code=True" in card and "python main.py --model llama-2-70b --budget 35b" in card


def test_a_local_model_has_no_base_model_and_the_command_is_quoted():
    card = model_card({"source_model": "/data/my-model", "plan": []}, None, "")
    assert "base_model" not in yaml.safe_load(card.split("---")[1])
    assert reproduce_command(["main.py", "prune", "--out", "my dir"]) == "python main.py prune --out 'my dir'"
