"""Load YAML into a pydantic config with errors that name the key and its line, and `a.b=value` overrides.

Used by `srft run` recipes. The YAML is composed once to remember where each key sits, so a validation error on
`train.lora_r` says "recipe.yaml:14: train.lora_r: Input should be a valid integer", and a misspelt key says
which keys exist there ("did you mean 'lora_r'?"). Every problem is reported at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from srft import config as _config
from srft.config import YamlLoader, coerce_key, error_message

class ConfigError(ValueError):
    """Every problem of a config file at once, one 'file:line: key: message' per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid recipe:\n  " + "\n  ".join(problems))


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """(key, key, ...) -> 1-based line of that key in the YAML source."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, key_node.value)
            out[key] = key_node.start_mark.line + 1
            _line_map(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = (*path, i)
            out[key] = item.start_mark.line + 1
            _line_map(item, key, out)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings in place (`srft.config.apply_overrides`: values parsed as YAML, so `3`,
    `1e-4`, `true`, `[a, b]` have their types; an empty value is null). ConfigError lists every bad one."""
    try:
        return _config.apply_overrides(data, overrides, option="override")
    except _config.ConfigProblems as exc:
        raise ConfigError(exc.problems) from None


def read_yaml(path: str | os.PathLike) -> tuple[dict[str, Any], dict[tuple, int]]:
    """(mapping, key -> line) of a YAML file; ConfigError naming the line when it does not parse."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from exc
    try:
        node = yaml.compose(text, Loader=YamlLoader)
        data = yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}"])
    return data, _line_map(node) if node is not None else {}


def describe_error(path: Path, lines: dict[tuple, int], overrides: list[str], err: dict,
                   model: type[BaseModel]) -> str:
    """One pydantic error as 'file:line: key: message' (or 'override key: ...' when an override set it)."""
    return describe_loc(path, lines, overrides, tuple(err["loc"]), error_message(err, model))


def describe_loc(path: Path, lines: dict[tuple, int], overrides: list[str], loc: tuple, message: str) -> str:
    """'file:line: key: message' for the deepest part of `loc` found in the file or in an override."""
    key = ".".join(str(p) for p in loc) or "(top level)"
    overridden = {tuple(coerce_key(p) for p in o.partition("=")[0].split(".")) for o in overrides}
    for o in sorted(overridden, key=len, reverse=True):  # it set this key, or replaced the subtree holding it
        if loc and (loc[:len(o)] == o or o[:len(loc)] == loc):
            return f"override {'.'.join(map(str, o))}: {key}: {message}"
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{path}:{lines[loc[:n]]}: {key}: {message}"
    return f"{path}: {key}: {message}"
