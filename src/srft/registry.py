"""Plain-dict registries map a short name to a dotted path, imported only when used (so `srft --help` loads no
torch). A user's own dotted path ('my_pkg.critics:MyCritic') works wherever a registered name does."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def resolve(registry: Mapping[str, str], name: str, kind: str) -> Any:
    """Return the object registered as `name`, or imported from a 'module:attr' / 'module.attr' path."""
    target = registry.get(name)
    if target is None:
        if ":" not in name and "." not in name:
            known = ", ".join(sorted(registry))
            raise RegistryError(f"unknown {kind} {name!r}; known: {known} (or a dotted path 'pkg.module:attr')")
        target = name
    module_name, _, attr = target.partition(":") if ":" in target else target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"cannot load {kind} {name!r} from {target!r}: {exc}") from exc
