"""``convergent.__all__`` stays true: what it names exists, is documented, and is complete.

In the manner of httpx's export test: every name in ``__all__`` resolves and is
described, every public name of the modules whose whole ``__all__`` is public API is
exported, and so is every built-in kind. And the namespace stays lazy.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import convergent
from convergent.resources.base import builtin_kinds, get_kind

# Modules whose every public name (their __all__) belongs in the top-level namespace.
CURATED = ("convergent.api", "convergent.engine.report", "convergent.errors")
INIT = Path(convergent.__file__)


def test_every_exported_name_resolves_and_dir_lists_it() -> None:
    for name in convergent.__all__:
        assert getattr(convergent, name) is not None, name
    assert set(convergent.__all__) <= set(dir(convergent))
    assert len(set(convergent.__all__)) == len(convergent.__all__)


def test_every_exported_name_is_described_in_the_package_docstring() -> None:
    doc = convergent.__doc__ or ""
    missing = [n for n in convergent.__all__ if n != "__version__" and f"``{n}``" not in doc]
    assert not missing, f"describe these in convergent/__init__.py's docstring: {missing}"


def test_every_exported_class_and_function_has_its_own_docstring() -> None:
    undocumented = []
    for name in convergent.__all__:
        value = getattr(convergent, name)
        if inspect.isclass(value):
            doc = vars(value).get("__doc__")  # not one inherited from a base class
        elif inspect.isfunction(value):
            doc = value.__doc__
        else:  # __version__ and the type aliases Report, Reporter
            continue
        if not (doc and doc.strip()):
            undocumented.append(name)
    assert not undocumented


def test_every_public_name_of_the_curated_modules_is_exported() -> None:
    for module_name in CURATED:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            assert name in convergent.__all__, f"{module_name}.{name} is not exported"
            assert getattr(convergent, name) is getattr(module, name), name


def test_every_built_in_kind_is_exported_under_its_class_name() -> None:
    for kind in builtin_kinds():
        cls = get_kind(kind)
        assert cls is not None, kind
        assert cls.__name__ in convergent.__all__, (
            f"kind {kind!r} is not exported: add {cls.__name__} to convergent/__init__.py's "
            "docstring, __all__, _LAZY and TYPE_CHECKING imports (docs/architecture.md, "
            "'Adding a kind')"
        )
        assert getattr(convergent, cls.__name__) is cls


def test_lazy_table_and_type_checking_imports_name_the_same_things() -> None:
    """What mypy sees (the TYPE_CHECKING block) is what the lazy table imports."""
    lazy = convergent._LAZY
    assert set(lazy) == set(convergent.__all__) - {"__version__"}
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module is not None
                imported.update((alias.name, stmt.module) for alias in stmt.names)
    assert imported == lazy


def test_import_convergent_and_its_all_import_no_submodule() -> None:
    code = (
        "import sys, convergent\n"
        "convergent.__all__, dir(convergent), convergent.__version__\n"
        "print(sorted(m for m in sys.modules if m.startswith('convergent.')"
        " or m in ('asyncio', 'msgspec', 'yaml', 'typing')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_version_imports_nothing_but_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "convergent", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    ours = sorted(m for m in modules if m.startswith("convergent"))
    # the start-up cache (cli/codecache.py, its file codefile.py) is the command's too
    assert ours == [
        "convergent",
        "convergent.cli",
        "convergent.cli.codecache",
        "convergent.cli.codefile",
        "convergent.cli.main",
    ]
    assert not modules & {"asyncio", "msgspec", "yaml", "ssl"}
