"""Transport errors are retried with backoff by the client, recorded apart from re-prompts, and
never become a fallback to the classic operator: a scripted OpenAI-compatible server in its own
process answers the first requests with 429 and 503."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.chat import make_backend
from agents.prompting import PromptSet
from agents.roles import make_roles

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scripted(tmp_path):
    """start(fail=[...]) -> (base URL, log path) of a scripted server; stopped after the test."""
    processes = []

    def start(fail: list[int]):
        script, port, log = tmp_path / "script.json", tmp_path / "port", tmp_path / "requests.log"
        script.write_text(json.dumps({"fail": fail}))
        processes.append(subprocess.Popen([sys.executable, "-m", "tests.scripted_server", str(script), str(port),
                                           str(log)], cwd=REPO))
        deadline = time.monotonic() + 30
        while not port.exists() or not port.read_text():
            assert time.monotonic() < deadline, "scripted server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port.read_text()}/v1", log

    yield start
    for process in processes:
        process.kill()
        process.wait()


def test_rate_limits_and_server_errors_are_retried_not_fallen_back(tmp_path, scripted):
    from tests.search_fixtures import run_tiny

    url, log = scripted([429, 429, 503])
    backend = make_backend(url + "#scripted", max_tokens=256, timeout=30)
    roles = make_roles(backend, PromptSet.load("moves"), retries=1)
    final, deps = run_tiny(tmp_path / "run", roles, generations=1)
    calls = deps.store.calls()
    assert calls and not [c for c in calls if c["outcome"] in ("fallback", "error")]
    assert sum(c["transport_retries"] or 0 for c in calls) == 3  # the three failures, each retried once
    first = calls[0]
    assert first["transport_retries"] == 3 and "retried-transport" in first["notes"]
    assert log.read_text().split()[:4] == ["429", "429", "503", "200"]
    assert final["best"] is not None


def test_a_dead_endpoint_is_an_error_after_the_retries(tmp_path, scripted):
    url, _ = scripted([503] * 10)  # more failures than the client retries
    backend = make_backend(url + "#scripted", max_tokens=64, timeout=30)
    with pytest.raises(Exception) as err:
        backend.ask("hello")
    assert getattr(err.value, "transport_retries", 0) == 4  # agents/transport.TRANSPORT_RETRIES
