"""Run options from a YAML file (`--config run.yaml`), the resolved options as YAML (`--print-config`,
and `config.yaml` in every run folder).

A config file is a mapping of option names to values, the same names as the command line, written
with dashes or underscores (`latency-weight: 1` or `latency_weight: 1`). Flags given on the command
line win over the file, the file over the defaults. Keys that are run options but not options of the
command at hand (a search run's `config.yaml` given to `prune`) are ignored and named; a key that is
no option at all is an error naming it and the nearest option. Values are checked as the command
line checks them (type, choices).
"""
from __future__ import annotations

import argparse
import difflib
from dataclasses import fields
from pathlib import Path

import yaml

from assembly.config import FIELD_NAMES, RunConfig


class ConfigFileError(ValueError):
    """A config file that cannot be used: missing, not YAML, not a mapping, an unknown key, a bad value."""


def read_config_file(path: str | Path) -> dict:
    """{field name: value} from the file; unknown keys and unreadable files raise ConfigFileError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigFileError(f"--config {path}: no such file") from None
    except yaml.YAMLError as err:
        raise ConfigFileError(f"--config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"--config {path}: expected a mapping of option names to values, got {type(data).__name__}")
    values = {}
    for key, value in data.items():
        name = str(key).strip().lstrip("-").replace("-", "_")
        if name not in FIELD_NAMES:
            near = difflib.get_close_matches(name, sorted(FIELD_NAMES), n=1)
            hint = f" (did you mean {near[0].replace('_', '-')}?)" if near else ""
            raise ConfigFileError(f"--config {path}: {key!r} is not an option{hint}; `--print-config` lists them")
        values[name] = value
    return values


def apply_config_file(parser: argparse.ArgumentParser, values: dict, path: str) -> list[str]:
    """The file's values as `parser`'s defaults (checked as the command line checks them); returns the
    keys this command does not take (ignored)."""
    actions = {a.dest: a for a in parser._actions if a.dest in FIELD_NAMES}
    defaults, ignored = {}, []
    for name, value in values.items():
        action = actions.get(name)
        if action is None:
            ignored.append(name.replace("_", "-"))
            continue
        defaults[name] = _checked(action, value, path)
    parser.set_defaults(**defaults)
    return ignored


def _checked(action: argparse.Action, value, path: str):
    flag = action.option_strings[0] if action.option_strings else action.dest
    if value is None:
        return None
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):  # e.g. --prompt ROLE=FILE, repeatable
        return [_one(action, item, flag, path) for item in (value if isinstance(value, list) else [value])]
    if isinstance(value, (list, dict)):
        raise ConfigFileError(f"--config {path}: {flag} takes one value, got {value!r}")
    return _one(action, value, flag, path)


def _one(action: argparse.Action, value, flag: str, path: str):
    if isinstance(value, bool) and action.choices and {"on", "off"} <= set(action.choices):
        value = "on" if value else "off"  # YAML 1.1 reads a bare on / off as a boolean
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigFileError(f"--config {path}: {flag} is true or false, not {value!r}")
        return value
    try:
        if action.type is None:
            out = value if isinstance(value, str) else str(value)  # e.g. `budget: 35` -> "35"
        elif action.type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        else:
            out = action.type(value)
    except (TypeError, ValueError):
        kind = getattr(action.type, "__name__", "value")
        raise ConfigFileError(f"--config {path}: {flag} {value!r} is not a valid {kind}") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigFileError(f"--config {path}: {flag} {value!r}: choose from {', '.join(map(str, action.choices))}")
    return out


def config_yaml(config: RunConfig, names: set[str] | None = None, header: str = "") -> str:
    """The options as a config file `--config` reads back (`names`: only these; default every run setting)."""
    chosen = {f.name.replace("_", "-"): _plain(getattr(config, f.name)) for f in fields(config)
              if (names is None and f.metadata["run"]) or (names is not None and f.name in names)}
    text = yaml.safe_dump(chosen, sort_keys=False, default_flow_style=False)
    return (header + text) if header else text


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
