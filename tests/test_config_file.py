"""--config FILE.yaml, --print-config, config.yaml in the run folder, --version."""
from dataclasses import fields

import pytest

from assembly.config import RunConfig
from main import build_parser, main, parse_with_config


def run_config(argv: list[str]) -> RunConfig:
    args, _ = parse_with_config(build_parser(), argv)
    return RunConfig.from_args(args)


def test_a_run_from_a_config_file_equals_the_same_run_from_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("rate: 0.35\nlatency-weight: 1\ntiming: off\nagent: classic\ngenerations: 3\n"
                    "fidelity: 1x128:4,2x256:2\nprompt: [mutator=my.txt]\nrandom_weights: true\n")
    from_file = run_config(["--config", str(path)])
    from_flags = run_config(["--rate", "0.35", "--latency-weight", "1", "--timing", "off", "--agent", "classic",
                             "--generations", "3", "--fidelity", "1x128:4,2x256:2", "--prompt", "mutator=my.txt",
                             "--random-weights"])
    assert from_file == from_flags
    assert from_file.timing == "off"  # YAML's bare `off` is a boolean: read as the option's "off"
    assert run_config(["--config", str(path), "--generations", "5"]).generations == 5  # flags win over the file


def test_a_search_runs_config_yaml_reads_back_to_the_same_settings(tmp_path):
    from commands.search import write_config_file

    config = run_config(["--rate", "0.3", "--seed", "4", "--latency-weight", "0.5", "--prompt", "selector=a.txt",
                         "--workers", "3", "--out", str(tmp_path / "elsewhere")])
    write_config_file(tmp_path, config, "run-1")
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith("# run run-1") and "\nworkers:" not in text and "elsewhere" not in text
    again = run_config(["--config", str(tmp_path / "config.yaml")])
    run_fields = [f.name for f in fields(RunConfig) if f.metadata["run"] and f.name != "out"]
    assert {n: getattr(again, n) for n in run_fields} == {n: getattr(config, n) for n in run_fields}


def test_bad_config_files_are_one_line_and_exit_2(tmp_path, capsys):
    cases = {"latency-wieght: 1\n": "did you mean latency-weight",
             "generations: many\n": "--generations 'many' is not a valid int",
             "fitness: bleu\n": "choose from kl, ppl",
             "- rate\n- 0.3\n": "expected a mapping",
             "rate: [0.3\n": "not valid YAML"}
    for k, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"c{k}.yaml"
        path.write_text(text)
        assert main(["--config", str(path), "--print-config"]) == 2
        assert message in " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in " ".join(capsys.readouterr().err.split())


def test_print_config_names_what_the_command_takes_and_ignores_the_rest(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("rate: 0.25\ngenerations: 3\n")
    assert main(["prune", "--config", str(path), "--print-config"]) == 0
    captured = capsys.readouterr()
    assert "rate: 0.25" in captured.out and "generations" not in captured.out
    assert "ignored: generations" in captured.err


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("self-pruner ")


def test_bad_input_is_one_line_but_a_library_bug_keeps_its_traceback(monkeypatch, capsys):
    """Our own checks (a ValueError raised in our code) are one line and exit 2; a ValueError raised
    inside a library (here the json module) is a bug: it propagates with its traceback (exit 1)."""
    import json

    import commands.runs as runs

    from pruning.budget import parse_param_count

    monkeypatch.setattr(runs, "run_list", lambda args: parse_param_count("abc", 100))  # raises in our code
    assert main(["runs"]) == 2 and "cannot read budget" in capsys.readouterr().err

    def library_bug(args):
        return json.loads("{")

    monkeypatch.setattr(runs, "run_list", library_bug)
    with pytest.raises(json.JSONDecodeError):
        main(["runs"])


def test_help_groups_options_with_defaults_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "the evolution and its fitness:" in text and "survivors per generation (default: 4)" in text
    assert "examples:" in text and "--config run.yaml" in text


def test_bash_completion_completes_subcommands_and_their_options(tmp_path, capsys):
    import subprocess

    assert main(["completion", "bash"]) == 0
    script = tmp_path / "completion.sh"
    script.write_text(capsys.readouterr().out)
    probe = (f'source {script}; COMP_WORDS=(self-pruner pru); COMP_CWORD=1; _self_pruner; echo "${{COMPREPLY[@]}}"; '
             'COMP_WORDS=(self-pruner serve --api); COMP_CWORD=2; _self_pruner; echo "${COMPREPLY[@]}"')
    lines = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True).stdout.splitlines()
    assert lines == ["prune", "--api-key"]
