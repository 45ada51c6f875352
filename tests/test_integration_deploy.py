"""The pruned embedded model in llama.cpp: the GGUF from `prune --export` loads with different head
counts and MLP widths per layer, and gives transformers' greedy tokens and perplexity."""
import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration
llama_cpp = pytest.importorskip("llama_cpp", reason="the llama.cpp checks need llama-cpp-python (install.sh --test)")

# Layer rates cycling 0.2 / 0.4 / 0.7: 9, 6 and 3 query heads and very different MLP widths.
RATES = ",".join(str((0.2, 0.4, 0.7)[i % 3]) for i in range(30))
WINDOWS, SEQLEN = 16, 512


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_data_dir):
    import main

    out = tmp_path_factory.mktemp("deploy") / "model"
    code = main.main(["prune", "--model", "smollm2-135m", "--rate", "0.45", "--allocation", RATES, "--no-eval",
                      "--calib-samples", "8", "--out", str(out), "--export", "gguf,gguf:q8_0",
                      *(["--data-dir", shared_data_dir] if shared_data_dir else [])])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def reference(exported, shared_data_dir):
    """The transformers checkpoint in fp32: its test windows, per-position greedy tokens, perplexity."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pruning.data import load_windows
    from pruning.perplexity import perplexity

    model = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported)
    windows = load_windows("wikitext2", "test", tokenizer, SEQLEN, shared_data_dir).head(WINDOWS)
    with torch.no_grad():
        greedy = np.stack([model(row[None]).logits[0].argmax(-1).numpy() for row in windows.input_ids])
    return windows, greedy, perplexity(model, windows, batch_size=4)


def test_the_gguf_has_per_layer_shapes(exported):
    import gguf

    config = json.loads((exported / "config.json").read_text())
    assert len(set(config["layer_num_attention_heads"])) == 3 and len(set(config["layer_intermediate_size"])) > 3
    fields = gguf.GGUFReader(str(exported.parent / "model-f16.gguf")).fields
    assert fields["general.architecture"].contents() == "deci"
    assert fields["deci.attention.head_count"].contents() == config["layer_num_attention_heads"]
    assert fields["deci.feed_forward_length"].contents() == config["layer_intermediate_size"]
    assert fields["tokenizer.ggml.model"].contents() == "gpt2" and "tokenizer.chat_template" in fields


@pytest.mark.parametrize("kind,tolerance", [("f16", 0.01), ("q8_0", 0.03)])
def test_llama_cpp_matches_transformers(exported, reference, kind, tolerance):
    from deploy.llamacpp_runtime import LlamaCppModel

    windows, greedy, ppl = reference
    with LlamaCppModel(exported.parent / f"model-{kind}.gguf", n_ctx=SEQLEN) as runtime:
        ids = windows.input_ids.tolist()
        got = runtime.perplexity(ids)
        agreement = np.mean([(runtime.logits(row).argmax(-1) == expected).mean() for row, expected in zip(ids, greedy)])
    assert got == pytest.approx(ppl, rel=tolerance)
    if kind == "f16":
        assert agreement >= 0.9


def test_serve_and_eval_the_gguf(exported, cli, shared_data_dir):
    import urllib.request

    from agents.local_server import LocalLlamaServer

    gguf = exported.parent / "model-q8_0.gguf"
    with LocalLlamaServer(gguf, threads=2, ctx=1024) as server:
        request = urllib.request.Request(server.base_url + "/chat/completions", method="POST",
                                         headers={"Content-Type": "application/json"},
                                         data=json.dumps({"messages": [{"role": "user", "content": "Hi"}],
                                                          "max_tokens": 4}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    assert answer["usage"]["completion_tokens"] >= 1
    result = cli("eval", gguf, "--eval-windows", "2", *(["--data-dir", shared_data_dir] if shared_data_dir else []))
    assert result.returncode == 0, result.stderr
    assert "llama.cpp)  ppl" in result.stdout
