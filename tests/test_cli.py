"""Bad input: one clear line on stderr, exit code 2, no traceback (in process, through `main.main`).
And real runs of `prune`, a killed and resumed search and `ablate` (integration, in their own processes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, env_extra=None, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", COLUMNS="200")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("args,fragment", [
    (["prune", "--model", "no-such-model", "--rate", "0.2"], "unknown model 'no-such-model'"),
    (["prune", "--model", "/nonexistent/dir", "--rate", "0.2"], "unknown model"),
    (["prune", "--rate", "1.5"], "outside [0, 1)"),
    (["prune", "--budget", "300m"], "above the model's size"),
    (["prune", "--budget", "20m"], "below the embeddings"),
    (["prune", "--budget", "lots"], "cannot read budget"),
    (["prune"], "exactly one of --budget"),
    (["prune", "--rate", "0.2", "--data-dir", "/nonexistent"], "not a directory"),
    (["prune", "--rate", "0.2", "--calib-data", "c4", "--data-dir", "."], "Pass --data-dir"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment, cli):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr
    assert result.stderr.count("error:") == 1


def test_directory_that_is_not_a_model(tmp_path, cli):
    result = cli("prune", "--model", str(tmp_path), "--rate", "0.2")
    assert result.returncode == 2 and "not a model directory" in result.stderr


@pytest.mark.integration
def test_prune_command_writes_a_reloadable_checkpoint(tmp_path, shared_data_dir):
    out = tmp_path / "model"
    args = ["prune", "--rate", "0.2", "--metric", "wanda-sp", "--allocation", "owl", "--dtype", "float32",
            "--calib-samples", "4", "--calib-seqlen", "128", "--eval-windows", "2", "--eval-seqlen", "128",
            "--out", str(out)]
    if shared_data_dir:
        args += ["--data-dir", shared_data_dir]
    result = run_cli(*args, env_extra={"SELF_PRUNER_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "pruning.json").read_text())
    assert record["params"]["total"] <= record["budget"]["target_params"]
    assert record["wikitext2_test"]["pruned_ppl"] > record["wikitext2_test"]["dense_ppl"]
    assert "WikiText-2 test PPL" in result.stdout
    assert (out / "modeling_pruned.py").exists() and (out / "tokenizer.json").exists()
    card = (out / "README.md").read_text()  # the model card: hub metadata and the record's own numbers
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "structured-pruning" in front["tags"]
    assert f"{record['params']['total']:,} parameters" in card
    assert f"| pruned | {record['params']['total']:,} | {record['wikitext2_test']['pruned_ppl']:.2f} |" in card
    assert card.count("\n| ") >= len(record["plan"]) and "prune --rate 0.2" in card  # every layer; the command
    evaluated = run_cli("eval", str(out), "--kl-base", "source", "--tasks", "none", "--dtype", "float32",
                        "--eval-windows", "2", "--eval-seqlen", "128", "--json", str(tmp_path / "eval.json"),
                        *(["--data-dir", shared_data_dir] if shared_data_dir else []),
                        env_extra={"SELF_PRUNER_CACHE": str(tmp_path / "cache")})
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    kl = json.loads((tmp_path / "eval.json").read_text())["kl_base"]
    assert kl["model"] == "smollm2-135m" and kl["kl"] > 0 and 0.2 < kl["top1_agreement"] < 1 and kl["tokens"] == 2 * 127


@pytest.mark.parametrize("args,env,fragment", [
    (["--agent", "http://127.0.0.1:9/v1", "--rate", "0.2"], {}, "unreachable"),
    (["--agent", "openai:gpt-4o-mini", "--rate", "0.2"], {"OPENAI_API_KEY": ""}, "OPENAI_API_KEY"),
    (["--agent", "bogus", "--rate", "0.2"], {}, "unknown --agent"),
    (["--resume", "no-such-run"], {}, "no run found"),
    (["--prompts", "/nonexistent/prompts"], {}, "is not a folder"),
    (["--prompt", "mutator"], {}, "use ROLE=FILE"),
])
def test_search_bad_input_is_one_line_and_exit_2(args, env, fragment, cli):
    result = cli(*args, env_extra=env)
    assert result.returncode == 2, result.stderr[-1500:]
    assert "Traceback" not in result.stderr and fragment in result.stderr


def test_prompt_with_unknown_variable_is_rejected(tmp_path, cli):
    bad = tmp_path / "mutator.md"
    bad.write_text("Mutate {genomes} using {secret_sauce}.")
    result = cli("--prompt", f"mutator={bad}", "--rate", "0.2")
    assert result.returncode == 2
    assert "unknown variable(s) ['secret_sauce']" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args,fragment", [
    (["eval", "smollm2-135m", "--tasks", "bogus"], "unknown task(s) bogus"),
    (["eval", "smollm2-135m", "--tasks", "boolq"], "pass --data-dir"),
    (["eval", "smollm2-135m", "--tasks", "boolq", "--data-dir", "."], "data file"),
])
def test_eval_bad_input(args, fragment, cli):
    result = cli(*args)
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args,fragment", [
    (["export", "/nonexistent/ckpt"], "not a checkpoint folder"),
    (["export", "smollm2-135m", "--quant", "q5_9"], "GGUF types are a comma list"),
    (["export", "smollm2-135m", "--quant", "f16,q8_0", "--out", "x.gguf"], "give a folder instead"),
    (["prune", "--rate", "0.2", "--export", "onnx"], "--export takes a comma list"),
    (["--rate", "0.2", "--export", "gguf:q3"], "GGUF types are a comma list"),
    (["--rate", "0.2", "--export", "gguf", "--save", "off"], "--export needs the saved checkpoint"),
    (["eval", "/nonexistent/model.gguf"], "no such GGUF file"),
    (["serve", "/nonexistent/ckpt"], "not a checkpoint folder"),
])
def test_export_serve_bad_input(args, fragment, cli):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_taken_port(cli):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("serve", "/nonexistent/x.gguf", "--port", taken.getsockname()[1])
    assert result.returncode == 2 and "pick another --port" in result.stderr


def test_eval_on_a_directory_that_is_not_a_model(tmp_path, cli):
    result = cli("eval", str(tmp_path), "--tasks", "none")
    assert result.returncode == 2 and "not a model directory" in result.stderr


@pytest.mark.integration
def test_cli_search_interrupted_and_resumed(tmp_path, shared_data_dir):
    """Ctrl-C (SIGINT) mid-search exits 130 and prints the resume command; that command continues the
    same run (same id, same checkpoint thread): no candidate evaluated twice, one run row, status
    finished. (A SIGKILLed search resumes the same way: tests/test_resume.py, tests/test_ray_workers.py.)"""
    import shlex
    import signal
    import sqlite3
    import time

    out = tmp_path / "run"
    args = ["--agent", "classic", "--rate", "0.2", "--population", "4", "--generations", "2", "--offspring", "4",
            "--fitness-tokens", "256", "--fitness-seqlen", "128", "--final-eval-windows", "1", "--eval-seqlen", "128",
            "--calib-samples", "4", "--calib-seqlen", "128", "--zero-shot", "off", "--timing", "off", "--out", str(out)]
    if shared_data_dir:
        args += ["--data-dir", shared_data_dir]
    env = dict(os.environ, HF_HUB_OFFLINE="1", SELF_PRUNER_CACHE=str(tmp_path / "cache"))
    # SIGINT as a terminal sends it (a test run in the background inherits it ignored, and Python keeps that)
    process = subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def count(query):
        try:
            with sqlite3.connect(out / "run.db") as db:
                return db.execute(query).fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    deadline = time.monotonic() + 300
    while count("select count(*) from evaluations") < 5 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    command = stderr.split("Resume with: ")[1].split("\n")[0].strip()
    assert command == f"python main.py --resume {out}"
    before = count("select count(*) from evaluations")
    result = run_cli(*shlex.split(command)[2:], env_extra={"SELF_PRUNER_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluations"] == before + summary["evaluations_this_session"]  # nothing evaluated twice
    assert count("select count(distinct generation) from generations") == 3  # nothing lost: every generation
    assert count("select count(*) from runs") == 1 and count("select status from runs") == "finished"


def test_runs_and_replay_commands(tmp_path, cli):
    from tests.search_fixtures import llm_roles, run_tiny
    from tests.test_search import CHILDREN, GOOD_INIT, MUTANTS, PAIRS

    run_tiny(tmp_path / "r1", llm_roles([GOOD_INIT, PAIRS, CHILDREN, MUTANTS]), generations=1)
    listed = cli("runs", "--root", str(tmp_path))
    assert listed.returncode == 0 and "rate 0.3" in listed.stdout
    shown = cli("replay", str(tmp_path / "r1"), "--speed", "0")
    assert shown.returncode == 0 and "generation 1: population" in shown.stdout
    missing = cli("replay", "no-such-run")
    assert missing.returncode == 2 and "no run found" in missing.stderr


@pytest.mark.integration
def test_ablate_command_on_the_embedded_model(tmp_path, shared_data_dir):
    """Two arms x one seed through the CLI: the comparison files, then a resume that keeps the
    finished cells, then a rerun with other settings refused."""
    out = tmp_path / "ablation"
    args = ["ablate", "--arms", "classic,cma", "--seeds", "0", "--rate", "0.2", "--population", "2", "--generations", "1",
            "--offspring", "2", "--fitness-tokens", "256", "--fitness-seqlen", "128", "--final-eval-windows", "1",
            "--eval-seqlen", "128", "--calib-samples", "4", "--calib-seqlen", "128", "--out", str(out)]
    if shared_data_dir:
        args += ["--data-dir", shared_data_dir]
    env = {"SELF_PRUNER_CACHE": str(tmp_path / "cache")}
    result = run_cli(*args, env_extra=env)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "ablation.json").read_text())
    assert [a["arm"] for a in data["arms"]] == ["classic", "cma"]
    cells = {c["arm"]: c for c in data["cells"]}
    assert cells["classic"]["evaluations"] > 0
    assert cells["cma"]["evaluations"] >= 3 + 2 + 1 * 2  # its asks (seeds + population + generations x offspring)
    assert (out / "convergence.png").stat().st_size > 0 and "| cma | 1 |" in (out / "ablation.md").read_text()
    stamp = (out / "cells" / "cma-s0" / "cell.json").stat().st_mtime
    again = run_cli(*args, env_extra=env)
    assert again.returncode == 0 and (out / "cells" / "cma-s0" / "cell.json").stat().st_mtime == stamp
    changed = run_cli(*[a if a != "0.2" else "0.3" for a in args], env_extra=env)
    assert changed.returncode == 2 and "rate 0.2 -> 0.3" in changed.stderr
