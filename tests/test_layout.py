"""The package's shape, held by reading its source (ast, nothing imported): modules small enough
to read in one sitting, folders that are layers each using only those before it, no import
circles, and a short top level."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ddpm"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_MODULES = 8

# Each layer may import from itself and from the layers before it, never from one after it.
LAYERS = (
    ("errors", "progress", "speed"),
    ("diffusion",),
    ("models",),
    ("data",),
    ("io",),
    ("viz",),
    ("sampling",),
    ("eval",),
    ("train",),
    ("cli",),
    ("api", "__init__", "__main__"),
)
RANK = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (`ddpm.models` is its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def layer(name: str) -> int:
    """The rank of a dotted ddpm module name: its first part below `ddpm`."""
    parts = name.split(".")
    return RANK[parts[1] if len(parts) > 1 else "__init__"]


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def is_ddpm(module: str | None) -> bool:
    return module is not None and (module == "ddpm" or module.startswith("ddpm."))


def imports(tree: ast.Module, module_level: bool) -> list[tuple[int, str]]:
    """(line, ddpm module) for every import of the package in `tree`, skipping those under
    `if TYPE_CHECKING:`; only those run at import time when `module_level` (not inside a
    function). `from ddpm.x import y` names ddpm.x.y when that is a module, else ddpm.x."""
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for other in child.orelse:
                    visit_one(other)
                continue
            if module_level and isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            ):
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if is_ddpm(a.name))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and is_ddpm(node.module):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((node.lineno, sub if sub in MODULES else node.module))
        visit(node)

    visit(tree)
    return found


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_modules_and_functions_fit_in_one_sitting():
    too_long = []
    for path in MODULES.values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(SRC)}: {lines} lines")
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(
                        f"{path.relative_to(SRC)}:{node.lineno} {node.name}(): {length} lines"
                    )
    assert not too_long, (
        f"modules over {MAX_MODULE_LINES} lines or functions over {MAX_FUNCTION_LINES}:\n"
        + "\n".join(too_long)
    )


def test_every_module_imports_only_from_its_layer_or_those_before_it():
    back = []
    for name, path in MODULES.items():
        for line, target in sorted(set(imports(parse(path), module_level=False))):
            if layer(target) > layer(name):
                back.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    order = " -> ".join("/".join(parts) for parts in LAYERS)
    assert not back, f"imports against the layer order ({order}):\n" + "\n".join(back)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (or a self-loop),
    found by Tarjan's algorithm, each listed from its first module back to it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            if len(component) > 1 or v in graph[v]:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    found = []
    for component in components:
        members, start = set(component), component[0]
        path, seen, v = [start], {start}, start
        while True:  # walk inside the component until a module repeats
            v = min(w for w in graph[v] if w in members)
            path.append(v)
            if v in seen:
                found.append(path[path.index(v) :])
                break
            seen.add(v)
    return found


def test_no_import_cycles():
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, target in imports(parse(path), module_level=True):
            if target in MODULES and target != name:
                graph[name].add(target)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_top_level_is_short():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules in src/ddpm: {top}"


def test_the_checks_see_what_they_should():
    """The scans themselves: a function-level back-import is seen, a TYPE_CHECKING one is not,
    and a two-module circle is found."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ddpm.train.config import TrainConfig\n"
        "def f():\n    from ddpm.cli import main\n"
        "from ddpm.diffusion import schedule\n"
    )
    assert imports(tree, module_level=False) == [(5, "ddpm.cli"), (6, "ddpm.diffusion.schedule")]
    assert imports(tree, module_level=True) == [(6, "ddpm.diffusion.schedule")]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b", "a"]]
    assert layer("ddpm.models.unet") < layer("ddpm.sampling.generate") < layer("ddpm.api")
