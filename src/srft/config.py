"""Shared config helpers: `key=value` overrides, pydantic error lines, instance-id lists.

One reader each, so every command and the recipe loader agree on what `lr=1e-4` or `seeds=[0, 1]` means and
on how a config problem is worded. Pure: no I/O except `read_instance_ids`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigProblems(ValueError):
    """Every problem of a config (bad `key=value` overrides, invalid fields) at once; `problems` holds one
    'field: problem' line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class YamlLoader(yaml.SafeLoader):
    """YAML values as a user means them on a command line: `1e-4` and `3E5` are floats (YAML 1.2; PyYAML's 1.1
    rules want a dot) and only true/false are booleans (1.1 also reads yes/no/on/off, so `device=on` or a name
    like `no` would silently turn into a bool)."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                list("tTfF"))
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse YAML text with the override rules above (also used for recipe files)."""
    return yaml.load(text, Loader=YamlLoader)


def parse_value(raw: str) -> Any:
    """One override value: `3` -> 3, `1e-4` -> 0.0001, `true` -> True, `null` or empty -> None, `[a, b]` ->
    ['a', 'b'], `{easy: 1}` -> a dict; anything YAML cannot read stays the string it was."""
    if not raw.strip():
        return None
    try:
        return load_yaml(raw)
    except yaml.YAMLError:
        return raw


def split_override(item: str, option: str = "--set") -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', parsed value). ValueError naming the option when there is no key or no '='."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigProblems([f"{option} {item!r}: expected KEY=VALUE, e.g. {option} max_steps=20"])
    return key, parse_value(raw)


def parse_overrides(items: Iterable[str] | None, option: str = "--set") -> dict[str, Any]:
    """Flat {dotted key: value} of every item; every malformed item is reported at once."""
    out, problems = {}, []
    for item in items or []:
        try:
            key, value = split_override(item, option)
        except ConfigProblems as exc:
            problems += exc.problems
            continue
        out[key] = value
    if problems:
        raise ConfigProblems(problems)
    return out


def coerce_key(part: str) -> Any:
    """A dotted-key part: digits index a list."""
    return int(part) if part.isdigit() else part


def apply_overrides(data: dict[str, Any], items: Iterable[str] | dict[str, Any],
                    option: str = "override") -> dict[str, Any]:
    """Set `a.b.c=value` items (or a {dotted key: value} dict) in `data`, in place. Missing or null
    intermediate keys become mappings; a digit part indexes an existing list. Raises ConfigProblems."""
    pairs = items.items() if isinstance(items, dict) else parse_overrides(items, option).items()
    problems = []
    for key, value in pairs:
        parts = [coerce_key(p.strip()) for p in key.split(".")]
        target: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(target, dict):
                if last:
                    target[part] = value
                elif not isinstance(target.get(part), dict | list):
                    target[part] = {}
            elif isinstance(target, list) and isinstance(part, int) and part < len(target):
                if last:
                    target[part] = value
            else:
                where = ".".join(map(str, parts[:depth])) or "the top level"
                problems.append(f"{option} {key}: {where} is not a mapping (or list long enough) to set "
                                f"{part!r} in")
                break
            if not last:
                target = target[part]
    if problems:
        raise ConfigProblems(problems)
    return data


# -- pydantic errors as `field: problem` lines --------------------------------------------------------------

def validate(model: type[M], data: Any) -> M:
    """`model.model_validate(data)`, or ConfigProblems with one 'field: problem' line per error (unknown keys
    get the closest known one)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigProblems(validation_problems(exc, model)) from None


def validation_problems(exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """Every error of `exc` as 'field.path: problem (got VALUE)'; unknown keys list the known ones."""
    return [f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {error_message(e, model)}" for e in exc.errors()]


def error_message(err: dict, model: type[BaseModel] | None = None) -> str:
    """A pydantic error's message without its URL; an unknown key gets the closest known one and the list."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        known = _fields_at(model, loc[:-1]) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{hint}" + (f" (known here: {', '.join(known)})" if known else "")
    if err["type"] == "missing":
        return "required, but not set"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("value_error", "assertion_error") or "input" not in err:
        return message
    return f"{message} (got {_short(err['input'])})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


# -- instance-id lists --------------------------------------------------------------------------------------

def read_instance_ids(path: str | os.PathLike, option: str = "instance list") -> list[str]:
    """Instance ids in file order: a JSON list of strings, or one id per line (blank lines and `#` comments
    skipped). Ids are trimmed; a UTF-8 BOM is ignored. ValueError naming `option` and the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"{option} {path}: cannot read ({reason}); give a file of instance ids") from exc
    if text.lstrip().startswith("["):
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{option} {path}: invalid JSON list ({exc.msg}, line {exc.lineno})") from exc
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{option} {path}: expected a JSON list of instance id strings")
        return [i.strip() for i in ids if i.strip()]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
