"""RunConfig is the one place a run's defaults live: the CLI is generated from it, the engine's
settings are derived from it, --resume and the ablation read it back."""
import json
from dataclasses import fields

import pytest

from assembly.config import RunConfig
from commands.ablate import check_settings
from experiments.ablation import AblationSetup
from graphs.nodes import SearchSettings
from main import build_parser
from pruning.prepare import PruneSettings


def test_command_line_defaults_are_the_config_defaults():
    assert RunConfig.from_args(build_parser().parse_args([])) == RunConfig()
    ablate = RunConfig.from_args(build_parser().parse_args(["ablate"]))
    assert ablate == RunConfig()


def test_every_option_of_the_search_is_a_config_field():
    parser = build_parser()
    dests = {a.dest for a in parser._actions if a.dest not in ("help", "command", "resume", "version", "config",
                                                                "print_config")}  # process options, not run settings
    assert dests == {f.name for f in fields(RunConfig)}


def test_engine_settings_defaults_agree_with_the_config():
    config = RunConfig()
    assert config.prune_settings() == PruneSettings()
    derived, default = config.search_settings(), SearchSettings()
    assert (derived.population, derived.generations, derived.offspring, derived.patience, derived.seed) == \
        (default.population, default.generations, default.offspring, default.patience, default.seed)
    setup = AblationSetup(config=config, context=None, budgets={}, fitness_windows=None, test_windows=None)
    assert setup.max_evals == 3 + 4 + 8 * 12


def test_parsed_values_reach_the_engine_settings():
    args = build_parser().parse_args(["--metric", "flap", "--rate", "0.3", "--calib-samples", "8", "--population", "5",
                                      "--granularity", "module", "--prompt", "mutator=m.md"])
    config = RunConfig.from_args(args)
    assert config.prune_settings().metric == "flap" and config.prune_settings().calib_samples == 8
    assert config.search_settings().population == 5 and config.search_settings().granularity == "module"
    assert config.rate == 0.3 and config.prompt == ("mutator=m.md",)
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_resume_takes_the_stored_run_and_this_command_lines_process_knobs():
    stored = RunConfig(model="m", rate=0.5, population=3, device="cpu", max_memory="cpu=1GB", prompt=("a=b",)).to_dict()
    now = RunConfig(max_memory="0=70GiB", offload_folder="/big", population=99)
    resumed = now.resumed(stored)
    assert (resumed.model, resumed.rate, resumed.population, resumed.device, resumed.prompt) == ("m", 0.5, 3, "cpu", ("a=b",))
    assert (resumed.max_memory, resumed.offload_folder) == ("0=70GiB", "/big")


def test_resume_reads_runs_stored_before_runconfig():
    # runs.args of older runs held a hand-kept subset of the arguments
    older = {"model": "m", "rate": 0.2, "agent": "classic", "population": 4, "unknown_old_key": 1}
    resumed = RunConfig().resumed(older)
    assert (resumed.model, resumed.agent, resumed.population, resumed.generations) == ("m", "classic", 4, 8)


def test_ablation_folder_refuses_other_measured_settings(tmp_path):
    check_settings(tmp_path, RunConfig(rate=0.2).measured())
    check_settings(tmp_path, RunConfig(rate=0.2, device="cuda", batch_size=16).measured())  # not measured: fine
    with pytest.raises(ValueError, match="population 4 -> 8"):
        check_settings(tmp_path, RunConfig(rate=0.2, population=8).measured())
    other = tmp_path / "with-prompt"
    check_settings(other, RunConfig(rate=0.2, prompt=("mutator=m.md",)).measured())
    check_settings(other, RunConfig(rate=0.2, prompt=("mutator=m.md",)).measured())  # as stored in JSON: the same


def test_ablation_folder_of_an_older_version_still_resumes(tmp_path):
    # settings.json written before RunConfig: fewer keys, plus report fields
    older = {k: v for k, v in RunConfig(rate=0.2).measured().items() if k not in ("random_weights", "llm_roles", "prompt")}
    (tmp_path / "settings.json").write_text(json.dumps({**older, "max_evals": 40, "budget_description": "rate 0.2"}))
    check_settings(tmp_path, RunConfig(rate=0.2).measured())
    with pytest.raises(ValueError, match="random_weights"):
        check_settings(tmp_path, RunConfig(rate=0.2, random_weights=True).measured())
