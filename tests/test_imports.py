"""The package's shape, computed from its source: no import circle, nothing imports a later stage of the pipeline,
no module over 400 lines. Imports inside functions count (a lazy import is still an arrow a reader follows); an
import under `if TYPE_CHECKING:` (a type in an annotation, never executed) counts for the pipeline order but not
as a circle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# The pipeline, bottom to top: a module may import its own layer and the layers below it, never one above.
LAYERS = [
    {"srft", "srft.model", "srft.io", "srft.config", "srft.registry", "srft.console", "srft.labels", "srft.policy"},
    {"srft.formats"}, {"srft.critic"}, {"srft.dataset"}, {"srft.train"}, {"srft.compare"}, {"srft.lab"},
    {"srft.view"}, {"srft.run"},
    {"srft.cli", "srft.__main__"},  # `python -m srft` is the `srft` command
    {"srft.testing"},  # test rigs (the fake OpenAI server): nothing in the product imports them
]
MAX_LINES = 400
LONG_MODULES: dict[str, str] = {}  # module -> why it may stay longer (none today)


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the srft package."""
    out = {}
    for path in sorted((SRC / "srft").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path], *, typing_only: bool = True) -> set[str]:
    """The srft modules `name` imports: `from srft.a import b` is srft.a.b when that is a module, else srft.a.
    With typing_only=False, imports under `if TYPE_CHECKING:` are left out."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped = set() if typing_only else {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                                         for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..a import b
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {_owner(m, known) for m in found if m == "srft" or m.startswith("srft.")} - {name, None}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _owner(module: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `module` names (an attribute path such as srft.io.atomic_path -> srft.io)."""
    while module and module not in known:
        module = module.rpartition(".")[0]
    return module or None


def layer(module: str) -> int:
    for depth in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:depth])
        for i, members in enumerate(LAYERS):
            if prefix in members:
                return i
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS in {__file__}")


def graph(typing_only: bool = True) -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known, typing_only=typing_only) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_circles_upward_imports_and_relative_imports():
    """The rules below would pass vacuously if the parser saw no arrows: check it on known shapes."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert layer("srft.run.graph") > layer("srft.lab.config") > layer("srft.model")
    known = modules()
    arrows = graph()
    assert "srft.run.runner" in arrows["srft.run.graph"]  # from srft.run.runner import Node
    assert "srft.run.layout" in arrows["srft.run.nodes"]  # from srft.run import layout (a module)
    assert "srft.io" in arrows["srft.run.runner"] and len(known) > 60
    assert "srft.run.recipe" in arrows["srft.run.lab"]  # under TYPE_CHECKING: a type still points downward
    assert "srft.run.recipe" not in graph(typing_only=False)["srft.run.lab"]


def test_no_import_circle():
    assert cycles(graph(typing_only=False)) == []


def test_nothing_imports_a_later_stage():
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets if layer(b) > layer(a))
    assert upward == []


def test_modules_stay_under_400_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES and name not in LONG_MODULES}
    assert long == {}
