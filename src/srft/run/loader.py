"""Load YAML into a pydantic config with errors that name the key and its line, and `a.b=value` overrides.

Used by `srft run` recipes. The YAML is composed once to remember where each key sits, so a validation error on
`train.lora_r` says "recipe.yaml:14: train.lora_r: Input should be a valid integer", and a misspelt key says
which keys exist there ("did you mean 'lora_r'?"). Every problem is reported at once.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` and `3E5` as floats (YAML 1.2; PyYAML's 1.1 rules want a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


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


def _coerce_key(key: str) -> Any:
    return int(key) if key.isdigit() else key


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings in place (value parsed as YAML, so `3`, `true`, `[a, b]` have their types;
    an empty value is null). Missing or null intermediate keys become mappings."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            problems.append(f"override {item!r}: expected KEY=VALUE, e.g. train.max_steps=20")
            continue
        parts = [_coerce_key(p) for p in key.split(".")]
        try:
            value = yaml.load(raw, Loader=_Loader) if raw else None
        except yaml.YAMLError as exc:
            problems.append(f"override {item!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)})")
            continue
        target: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(map(str, parts[:depth])) or "the top level"
            if isinstance(target, dict):
                if last:
                    target[part] = value
                elif not isinstance(target.get(part), dict | list):
                    target[part] = {}
            elif isinstance(target, list) and isinstance(part, int) and part < len(target):
                if last:
                    target[part] = value
            else:
                problems.append(f"override {item!r}: {where} is not a mapping (or list long enough) to set "
                                f"{part!r} in")
                break
            if not last:
                target = target[part]
    if problems:
        raise ConfigError(problems)
    return data


def read_yaml(path: str | os.PathLike) -> tuple[dict[str, Any], dict[tuple, int]]:
    """(mapping, key -> line) of a YAML file; ConfigError naming the line when it does not parse."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from exc
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}"])
    return data, _line_map(node) if node is not None else {}


def load_config(model: type[M], path: str | os.PathLike, overrides: list[str] | None = None) -> tuple[M, dict]:
    """Parse and validate `path` against `model`; return the config and the raw (overridden) dict."""
    data, lines = read_yaml(path)
    overrides = list(overrides or [])
    data = apply_overrides(data, overrides)
    try:
        return model.model_validate(data), data
    except ValidationError as exc:
        raise ConfigError([describe_error(Path(path), lines, overrides, err, model) for err in exc.errors()]) from exc


def describe_error(path: Path, lines: dict[tuple, int], overrides: list[str], err: dict,
                   model: type[BaseModel]) -> str:
    """One pydantic error as 'file:line: key: message' (or 'override key: ...' when an override set it)."""
    return describe_loc(path, lines, overrides, tuple(err["loc"]), error_message(err, model))


def error_message(err: dict, model: type[BaseModel]) -> str:
    """A pydantic error's message, with the keys that exist where an unknown key was given."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return f"unknown key{f'; did you mean {close[0]!r}?' if close else ''} (known here: {', '.join(known)})"
    if err["type"] == "missing":
        return "required, but not set"
    return err["msg"].removeprefix("Value error, ")


def describe_loc(path: Path, lines: dict[tuple, int], overrides: list[str], loc: tuple, message: str) -> str:
    """'file:line: key: message' for the deepest part of `loc` found in the file or in an override."""
    key = ".".join(str(p) for p in loc) or "(top level)"
    overridden = {tuple(_coerce_key(p) for p in o.partition("=")[0].split(".")) for o in overrides}
    for o in sorted(overridden, key=len, reverse=True):  # it set this key, or replaced the subtree holding it
        if loc and (loc[:len(o)] == o or o[:len(loc)] == loc):
            return f"override {'.'.join(map(str, o))}: {key}: {message}"
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{path}:{lines[loc[:n]]}: {key}: {message}"
    return f"{path}: {key}: {message}"


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """The field names of the pydantic model that sits at `loc` below `model` (best effort; [] if unknown).
    Dict keys and list indices are stepped over; pydantic names union members in locs, which match a class."""
    current: Any = model
    for part in loc:
        current = _step(_unwrap(current), part)
        if current is None:
            return []
    current = _unwrap(current)
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """`X | None` -> X (pydantic does not name the member of an optional in a loc)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return tp


def _step(tp: Any, part: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part)
        return field.annotation if field is not None else None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if getattr(a, "__name__", None) == part), None)
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin is list:
        return typing.get_args(tp)[0]
    return None
