"""The package's shape: imports point one way, no module imports itself back, no module
is too large.

Every module under src/convergent is parsed (not imported), and every import counts:
module level, inside functions (lazy ones), and under ``if TYPE_CHECKING:``. A module
named in a string (``"convergent.resources.file:File"`` in the built-in kinds, the lazy
names of ``convergent/__init__.py``, the commands of ``cli/main.py``: imported by name
when first needed) counts for the layer order too, but not for cycles: the kind registry
names the kinds that import it, by design, and imports them only when asked for one. The
layers and what each may import are read from the table in docs/architecture.md, so the
page and the code cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "convergent"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """``convergent.engine.worker`` -> its file (a package is its ``__init__.py``)."""
    found: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


BY_NAME = re.compile(r"convergent(\.\w+)+(:\w+)?")  # "convergent.resources.file:File"


def _imports(module: str, path: Path, *, by_name: bool = False) -> set[str]:
    """The convergent modules ``module`` imports, wherever the import statement is (with
    ``by_name``: the modules it names in a string instead, to import them when needed)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if by_name:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value.partition(":")[0]
                if BY_NAME.fullmatch(node.value) and name in MODULES:
                    found.add(name)
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base]
            # ``from convergent.resources import file``: the submodule is imported too.
            names += [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "convergent":
                continue
            while name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            if name in MODULES and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}
NAMED = {module: _imports(module, path, by_name=True) for module, path in MODULES.items()}


def _layer(module: str) -> str:
    """``convergent.engine.worker`` -> ``engine``; the package itself -> ``convergent``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "convergent"


def _allowed() -> dict[str, set[str]]:
    """The layers table of docs/architecture.md: layer -> the layers it may import."""
    allowed: dict[str, set[str]] = {}
    row = re.compile(r"^\| `convergent(?:\.(\w+))?` \|.*\| ([^|]*) \|$")
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        match = row.match(line)
        if match is None:
            continue
        names = match.group(2).strip()
        may = set() if names == "nothing" else {n.strip(" `") for n in names.split(",")}
        allowed[match.group(1) or "convergent"] = may
    return allowed


def test_every_layer_is_in_the_architecture_table() -> None:
    allowed = _allowed()
    missing = sorted({_layer(m) for m in MODULES} - set(allowed))
    assert not missing, f"add a row for {missing} to the layers table of {ARCHITECTURE}"
    for layer, may in allowed.items():
        unknown = may - set(allowed)
        assert not unknown, f"{layer} may import {unknown}: no such layer in the table"


def test_imports_follow_the_layer_order() -> None:
    allowed = _allowed()
    wrong = [
        f"{module} imports {target}"
        for module in sorted(GRAPH)
        for target in sorted(GRAPH[module] | NAMED[module])
        if _layer(target) != _layer(module) and _layer(target) not in allowed[_layer(module)]
    ]
    assert not wrong, "imports against the layer order (docs/architecture.md):\n" + "\n".join(wrong)


def _cycle() -> list[str] | None:
    """One import cycle among the modules, as a path that ends where it starts."""
    done: set[str] = set()
    for start in sorted(GRAPH):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack = [(start, iter(sorted(GRAPH[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if child in on_path:
                return [*path[path.index(child) :], child]
            if child not in done:
                stack.append((child, iter(sorted(GRAPH[child]))))
                path.append(child)
                on_path.add(child)
    return None


def test_no_import_cycle_even_under_type_checking() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_every_module_is_under_600_lines() -> None:
    long = {
        module: lines
        for module, path in MODULES.items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) >= MAX_LINES
    }
    assert not long, f"modules of {MAX_LINES} lines or more: {long}"


def test_the_checks_see_lazy_and_type_checking_imports() -> None:
    """The parser itself: an import inside a function or under TYPE_CHECKING counts."""
    assert "convergent.state.db" in GRAPH["convergent.engine.worker"]  # TYPE_CHECKING
    assert "convergent.resources.recv" in GRAPH["convergent.policy.build"]  # in a function
    assert "convergent.resources.file" in NAMED["convergent.resources.base"]  # _BUILTIN
    assert "convergent.api" in NAMED["convergent"]  # the lazy public names
