"""A search killed mid-generation (SIGKILL, a real process kill) resumes without losing or
re-evaluating any candidate, and ends exactly where an uninterrupted run ends."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def worker(run_dir: Path, mode: str, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.resume_worker", str(run_dir), mode, str(delay)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def evaluations(run_dir: Path) -> int:
    try:
        with sqlite3.connect(run_dir / "run.db") as db:
            return db.execute("select count(*) from evaluations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_killed_search_resumes_without_loss_or_repeats(tmp_path):
    reference = tmp_path / "reference"
    assert worker(reference, "fresh", 0.0).wait(timeout=300) == 0
    expected = json.loads((reference / "result-fresh.json").read_text())

    killed = tmp_path / "killed"
    process = worker(killed, "fresh", 0.4)
    deadline = time.monotonic() + 240
    while evaluations(killed) < 6 and time.monotonic() < deadline:  # 4 initial + 2 of generation 1
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = evaluations(killed)
    assert 6 <= before < expected["evaluations"]
    assert not (killed / "result-fresh.json").exists()

    resumed = worker(killed, "resume", 0.0)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    result = json.loads((killed / "result-resume.json").read_text())
    assert before + result["evaluations"] == evaluations(killed)  # nothing evaluated twice
    assert evaluations(killed) == expected["evaluations"]  # nothing lost
    assert result["history"] == expected["history"] and result["best"] == expected["best"]
    with sqlite3.connect(killed / "run.db") as db:
        keys = {row[0] for row in db.execute("select plan_key from candidates")}
        evaluated = {row[0] for row in db.execute("select plan_key from evaluations")}
    assert keys == evaluated
