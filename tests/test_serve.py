"""`serve`: an API key beyond loopback, the alias clients see, several requests at once — against the
real llama.cpp server (xllamacpp) on the embedded GGUF."""
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from main import main


def test_a_server_beyond_loopback_needs_a_key(capsys, monkeypatch):
    monkeypatch.delenv("SELF_PRUNER_API_KEY", raising=False)
    assert main(["serve", "missing.gguf", "--host", "0.0.0.0"]) == 2  # refused before anything starts
    assert "--api-key" in " ".join(capsys.readouterr().err.split())
    from commands.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("myhost")


def post(url: str, key: str | None, content: str) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url + "/chat/completions", method="POST", headers=headers,
                                     data=json.dumps({"messages": [{"role": "user", "content": content}],
                                                      "max_tokens": 16, "temperature": 0}).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def get(url: str, key: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.integration
def test_four_requests_at_once_with_a_key_and_an_alias():
    from agents.local_server import LocalLlamaServer
    from pruning.loading import embedded_gguf_path

    with LocalLlamaServer(embedded_gguf_path(), threads=2, ctx=512, slots=4, api_key="s3cret",
                          alias="smollm2-pruned") as server:
        models = get(server.base_url + "/models", "s3cret")
        assert [m["id"] for m in models["data"]] == ["smollm2-pruned"]  # not the file's local path
        assert get(server.base_url.removesuffix("/v1") + "/props", "s3cret")["total_slots"] == 4
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(server.base_url, None, "Hello")
        assert refused.value.code == 401
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda k: post(server.base_url, "s3cret", f"Count to {k + 3}."), range(4)))
    assert all(a["usage"]["completion_tokens"] >= 1 for a in answers)  # four at once, all answered
