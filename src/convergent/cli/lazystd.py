"""asyncio and msgspec without the standard modules a run does not use, until it does.

``import asyncio`` and ``import msgspec`` load modules that a plain run never touches:
``ssl`` (OpenSSL), ``concurrent.futures`` with ``logging``, ``subprocess``, ``inspect``
with ``ast`` and ``dis``, ``traceback`` and ``linecache`` with ``tokenize``, ``platform``
(through ``uuid``), ``typing_extensions``, msgspec's ``inspect`` and JSON schema, and
asyncio's own ``sslproto``, ``staggered`` and ``trsock`` (TLS, happy eyeballs, socket
transports): about 16 ms of a 75 ms ten-file run here (docs/performance.md).
:func:`import_runtime` imports both with these held back:

- while asyncio and msgspec are imported, each held module is a stand-in
  (:class:`_Held`) with the few values they read at that time (``subprocess.PIPE``,
  ``logging.DEBUG``, ``concurrent.futures.FIRST_COMPLETED``, ``platform.system()``,
  ``traceback.extract_stack``, ``msgspec.json.schema``: a :class:`Forward` to the real
  function);
  any other attribute imports the real module and answers from it. asyncio's logger is
  a stand-in (:class:`_Logger`) that forwards to ``logging.getLogger("asyncio")``;
- ``typing_extensions`` is absent while msgspec is imported: msgspec then takes
  ``get_type_hints``, ``Required`` and ``NotRequired`` from ``typing``, which has them;
- ``ssl`` is absent while asyncio is imported (asyncio takes it for missing), then a
  stand-in in asyncio's ``ssl`` globals, which answers ``SSLSocket`` (asyncio checks
  every socket it connects against it) without loading OpenSSL;
- ``datetime`` (msgspec's C core takes its types at its init) is made as Python 3.12
  makes it: the names of the ``_datetime`` extension, ``__all__`` and ``sys`` in the
  module of ``datetime.py``'s spec, without running the pure-Python version that 3.11's
  ``datetime.py`` defines before it replaces it with those same names (~100 KB of
  compiled code, ~1 ms). The module is the one a plain import leaves: the same names,
  values, spec and loader;
- ``typing.ForwardRef`` is a stand-in while msgspec is imported: ``msgspec._utils``
  probes it for the ``is_class`` argument, which would be the first ``compile()`` of
  the run, ~1 ms (the first in a process makes the ``ast`` node types; a run makes no
  other: tests/cli/test_lazystd.py).

Afterwards no stand-in is in ``sys.modules``, nor an attribute of a package (a hook
answers ``concurrent.futures``, ``msgspec.inspect`` or ``asyncio.sslproto`` with the
real module, so a from-import gets it). The first ``import X`` anywhere (the exec
kind's ``subprocess``, httpx's ``ssl``, ...) or the first use of a stand-in loads the
real module (waiting, as an ``import`` does, for another thread that is importing it),
and a finder on the meta path then puts it (and the real logger) in every global that
held the stand-in and gives the module its own loader back: from then on asyncio is as a
plain ``import asyncio`` leaves it (tests/cli/test_lazystd.py: TLS, subprocesses,
executors, logging, ``inspect`` and debug mode's tracebacks through asyncio after a run's
start-up, in the same process). ``subprocess`` loaded so is loaded with ``locale`` held
in turn (:data:`_HELD_BY`).

Only the ``convergent`` command does this (``cli.main.entry``), and only while no other
thread runs (one would see the stand-ins in ``sys.modules``: then asyncio and msgspec are
imported as usual); :func:`~convergent.cli.main.main` called by another program leaves
its imports alone.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

TYPE_CHECKING = False  # as in convergent/__init__.py: typing is not imported for it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["HELD", "Forward", "import_runtime"]

_IMPORTED = ("asyncio", "msgspec")  # what import_runtime imports
_SSL_USERS = ("asyncio.base_events", "asyncio.selector_events")


def _system() -> str:
    """``platform.system()`` on Linux (``uuid`` asks it once, at its import)."""
    return os.uname().sysname


def _extract_stack(f: Any = None, limit: int | None = None) -> Any:
    """``traceback.extract_stack``, which ``_asyncio`` takes at its import and keeps (debug
    mode's source tracebacks): the stack from the frame that called it, as the real one
    gives when called directly."""
    return _real("traceback").extract_stack(sys._getframe(1) if f is None else f, limit)


class Forward:
    """A function of a held module taken by name while it is held (``from X import f``):
    calls the real ``f``, loading ``X`` then."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(_real(self.module), self.name)(*args, **kwargs)


# Each held module, and what asyncio, uuid and msgspec take from it while they are
# imported: the same values as the real module's (the test compares them), or a Forward.
HELD: dict[str, dict[str, object]] = {
    "concurrent.futures": {
        "FIRST_COMPLETED": "FIRST_COMPLETED",
        "FIRST_EXCEPTION": "FIRST_EXCEPTION",
        "ALL_COMPLETED": "ALL_COMPLETED",
    },
    "subprocess": {"PIPE": -1, "STDOUT": -2, "DEVNULL": -3},
    "logging": {"DEBUG": 10},
    "inspect": {},
    "traceback": {"extract_stack": _extract_stack},
    "linecache": {},
    "msgspec.inspect": {},
    # asyncio's modules that base_events and selector_events call only at run time: TLS,
    # happy eyeballs (whose annotations build typing generics at import), the socket
    # wrapper of a socket transport
    "asyncio.sslproto": {},
    "asyncio.staggered": {},
    "asyncio.trsock": {},
    "msgspec._json_schema": {
        "schema": Forward("msgspec._json_schema", "schema"),
        "schema_components": Forward("msgspec._json_schema", "schema_components"),
    },
}
if sys.platform == "linux":
    HELD["platform"] = {"system": _system}
# What a held module imports that a run does not use, held in turn while it is loaded
# (when no other thread runs, which could import it meanwhile and keep the stand-in):
# ``subprocess`` reads ``locale`` only for a text-mode command without an encoding (the
# agent's pipes are binary), and ``locale`` is ~1 ms at the first command of a run.
_HELD_BY: dict[str, tuple[str, ...]] = {"subprocess": ("locale",)}


def import_runtime() -> None:
    """Import asyncio and msgspec with :data:`HELD`, ``ssl`` and ``typing_extensions``
    held back (a module already imported is not held); with another thread running (it
    would see the stand-ins in ``sys.modules``), as a plain import does."""
    import _thread

    if _thread._count():
        import asyncio
        import asyncio.selector_events
        import asyncio.sslproto

        import msgspec  # noqa: F401

        return
    before = set(sys.modules)
    held = {name: _Held(name, values) for name, values in HELD.items() if name not in before}
    absent = [
        name
        for name, wanted in (("ssl", "asyncio"), ("typing_extensions", "msgspec"))
        if name not in before and wanted not in before
    ]
    for name, stand_in in held.items():
        sys.modules[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent and parent not in _IMPORTED:  # `import concurrent.futures` reads the
            setattr(__import__(parent), child, stand_in)  # package's attribute (msgspec's
            # own `from . import inspect` finds the stand-in in sys.modules); afterwards a
            # _PackageHook answers for it
    for name in absent:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` fails
    if "datetime" not in before:
        sys.meta_path.insert(0, _DATETIME)
    try:
        import asyncio
        import asyncio.selector_events  # noqa: F401

        _import_msgspec()
    finally:
        if _DATETIME in sys.meta_path:
            sys.meta_path.remove(_DATETIME)
        for name in absent:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
        for name, stand_in in held.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    if "ssl" in absent:
        ssl = _Held("ssl", {"SSLSocket": _NoSSLSocket})
        for name in _SSL_USERS:
            sys.modules[name].ssl = ssl  # type: ignore[attr-defined]
        held["ssl"] = ssl
    for name, stand_in in held.items():  # a package's submodule that its modules imported
        parent, _, child = name.rpartition(".")  # from sys.modules (`from . import sslproto`)
        package = sys.modules.get(parent) if parent in _IMPORTED else None
        if package is not None and child not in package.__dict__:  # is its attribute after
            setattr(package, child, stand_in)  # a plain import: a _PackageHook answers for it
    if held:
        hooks = _hook_packages(held)
        _hand_over(held, [sys.modules[name] for name in sys.modules.keys() - before], hooks)


def _probe(
    arg: str, is_argument: bool = True, module: Any = None, *, is_class: bool = False
) -> None:
    """``typing.ForwardRef`` while msgspec is imported: it accepts what 3.11's takes."""


def _import_msgspec() -> None:
    """``import msgspec``, with ``typing.ForwardRef`` a stand-in meanwhile (no other
    thread runs: :func:`import_runtime`): its only use then is ``msgspec._utils``'s
    probe of the ``is_class`` argument, which 3.11's accepts, and the real one would
    make it the run's first ``compile()``, ~1 ms (the first in a process makes the
    ``ast`` node types)."""
    typing: Any = sys.modules.get("typing")  # asyncio imported it
    real = None if typing is None or "msgspec" in sys.modules else typing.ForwardRef
    if real is not None:
        typing.ForwardRef = _probe
    try:
        import msgspec  # noqa: F401
    finally:
        if real is not None:
            typing.ForwardRef = real


def _find_after(finder: Any, name: str, path: Any, target: Any) -> Any:
    """The spec the finders after ``finder`` on the meta path give for ``name``."""
    for after in sys.meta_path[sys.meta_path.index(finder) + 1 :]:
        find: Callable[..., Any] | None = getattr(after, "find_spec", None)
        spec = None if find is None else find(name, path, target)
        if spec is not None:
            return spec
    return None


# The names of Python 3.12's datetime.py (3.11's defines the pure-Python version first).
_DATETIME_ALL = (
    "date", "datetime", "time", "timedelta", "timezone", "tzinfo", "MINYEAR", "MAXYEAR", "UTC",
)  # fmt: skip


class _DatetimeFinder:
    """On the meta path while asyncio and msgspec are imported: ``datetime``'s spec as
    the finders after it give it, with a :class:`_DatetimeLoader` when it is the
    standard library's ``datetime.py`` (one found before it, in the script's directory
    or on ``PYTHONPATH``, runs as it is)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "datetime":
            return None
        spec = _find_after(self, name, path, target)
        where = getattr(os, "__file__", None)  # the standard library's directory
        if where is None or spec is None or spec.loader is None:
            return spec
        if spec.origin == os.path.join(os.path.dirname(where), "datetime.py"):
            spec.loader = _DatetimeLoader(spec.loader)
        return spec


class _DatetimeLoader:
    """Fills the module as Python 3.12's ``datetime.py`` does (``import sys``, ``from
    _datetime import *`` and its ``__doc__``, ``__all__``) when ``_datetime`` is there,
    else runs the module's own code; then gives the module its own loader back. Not by
    ``exec`` of that source: the first ``compile`` in a process costs ~1 ms."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        inner = self._inner
        try:
            import _datetime  # type: ignore[import-not-found]
        except ImportError:
            inner.exec_module(module)
        else:
            import builtins

            space = module.__dict__
            space.setdefault("__builtins__", builtins.__dict__)
            space["sys"] = sys
            space.update((k, v) for k, v in vars(_datetime).items() if not k.startswith("_"))
            space["__doc__"] = _datetime.__doc__
            space["__all__"] = _DATETIME_ALL
        _give_loader_back(module, self, inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_DATETIME = _DatetimeFinder()


def _give_loader_back(module: ModuleType, loader: Any, inner: Any) -> None:
    """The module's own loader in place of ``loader``, as a plain import leaves it."""
    spec: Any = module.__spec__
    if spec is not None and spec.loader is loader:
        spec.loader = inner
    if getattr(module, "__loader__", None) is loader:
        module.__loader__ = inner


class _PackageHook:
    """A package's ``__getattr__`` while submodules of it are held, in place of their
    stand-ins as its attributes: the submodule asked for as an attribute
    (``concurrent.futures.Future``, ``from concurrent import futures``, msgspec's own
    ``from . import inspect as mi``) is the real one, imported then."""

    __slots__ = ("children", "package", "previous")

    def __init__(self, package: ModuleType) -> None:
        self.package = package
        self.children: dict[str, str] = {}
        self.previous: Callable[[str], Any] | None = package.__dict__.get("__getattr__")

    def __call__(self, attr: str) -> Any:
        name = self.children.get(attr)
        if name is not None:
            return _real(name)
        if self.previous is not None:
            return self.previous(attr)
        raise AttributeError(f"module {self.package.__name__!r} has no attribute {attr!r}")

    def loaded(self, name: str) -> None:
        """``name`` is imported (its package's attribute is the real module): once none is
        held, the package is as it was."""
        self.children.pop(name.rpartition(".")[2], None)
        space = self.package.__dict__
        if not self.children and space.get("__getattr__") is self:
            if self.previous is None:
                del space["__getattr__"]
            else:
                space["__getattr__"] = self.previous


def _hook_packages(held: dict[str, _Held]) -> dict[str, _PackageHook]:
    """Take each held submodule's stand-in out of its package's attributes, where the
    import left it, and put a :class:`_PackageHook` there; by held name."""
    hooks: dict[str, _PackageHook] = {}
    by_package: dict[str, _PackageHook] = {}
    for name, stand_in in held.items():
        parent, _, child = name.rpartition(".")
        package = sys.modules.get(parent) if parent else None
        if package is None or package.__dict__.get(child) is not stand_in:
            continue
        hook = by_package.get(parent)
        if hook is None:
            hook = by_package[parent] = _PackageHook(package)
            package.__getattr__ = hook  # type: ignore[method-assign]
        del package.__dict__[child]
        hook.children[child] = name
        hooks[name] = hook
    return hooks


class _NoSSLSocket:
    """No object is one: until ``ssl`` is loaded, no ``ssl.SSLSocket`` can exist."""


class _Held(ModuleType):
    """A held module: the values read at import time; anything else loads the real one."""

    def __init__(self, name: str, values: dict[str, object]) -> None:
        super().__init__(name)
        self.__dict__.update(values)
        if name == "logging":
            self.getLogger = _Logger

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # `from . import X` asks for `__path__`: no package, no
            raise AttributeError(name)  # file, nothing that would load the module
        return getattr(_real(self.__name__), name)


class _Logger:
    """``logging.getLogger(name)`` until ``logging`` is loaded. A debug or info record is
    dropped without loading it: no one can have configured logging before it is loaded,
    so the level is the root's default, WARNING (asyncio says "Using selector" at debug
    level for every loop it makes). Any other use loads it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, *args: Any, **kwargs: Any) -> None:
        self._below_warning("debug", args, kwargs)

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._below_warning("info", args, kwargs)

    def _below_warning(self, level: str, args: Any, kwargs: Any) -> None:
        logging = sys.modules.get("logging")
        if logging is not None and not isinstance(logging, _Held):
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2  # the record's caller is
            getattr(logging.getLogger(self.name), level)(*args, **kwargs)  # the one of debug()

    def __getattr__(self, attr: str) -> Any:
        return getattr(_real("logging").getLogger(self.name), attr)


def _real(name: str) -> ModuleType:
    """The real module, imported now if need be, as an ``import`` statement imports it
    (one that another thread is importing is waited for). Not through ``importlib``: a
    run does not load it, and CPython 3.11 gives a thread that imports
    ``importlib.machinery`` while another one is importing ``importlib`` a second, bare
    copy of the import system (``NameError: name 'sys' is not defined`` in
    ``_find_and_load`` from then on; tests/cli/test_lazystd.py)."""
    if isinstance(sys.modules.get(name), _Held):
        del sys.modules[name]  # only while asyncio and msgspec are imported
    __import__(name)
    return sys.modules[name]


class _Holder:
    """One global (``space[key]``) that holds a stand-in."""

    __slots__ = ("key", "space", "stand_in")

    def __init__(self, space: dict[str, object], key: str, stand_in: object) -> None:
        self.space, self.key, self.stand_in = space, key, stand_in


def _hand_over(
    held: dict[str, _Held], modules: list[ModuleType], hooks: dict[str, _PackageHook]
) -> None:
    """Find the globals of ``modules`` that hold a stand-in, and have the finder give them
    the real module once it is loaded. Only the names an ``import`` binds are looked at
    (``import concurrent.futures``: ``concurrent``'s ``futures``; ``from .log import
    logger``): one bound under another name would keep forwarding to the real module."""
    holders: dict[str, list[_Holder]] = {name: [] for name in held}
    keys = {"logger", *(part for name in held for part in name.split("."))}
    for module in modules:
        space = module.__dict__
        for key in keys & space.keys():
            value = space[key]
            kind = type(value)
            if kind is _Held:
                holders[value.__name__].append(_Holder(space, key, value))
            elif kind is _Logger and "logging" in holders:
                holders["logging"].append(_Holder(space, key, value))
    finder = _Finder(holders, hooks)
    sys.meta_path.insert(0, finder)
    for name in held:
        if name in sys.modules:  # loaded while asyncio was imported (an unexpected read)
            finder.give(sys.modules[name])


def _give_ssl(ssl: ModuleType) -> None:
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None:
        sslproto.SSLAgainErrors = (ssl.SSLWantReadError, ssl.SSLSyscallError)  # type: ignore[attr-defined]


class _Finder:
    """On the meta path until every held module is loaded: finds it as the finders after
    it would, and once it is executed, puts it where its stand-in was."""

    def __init__(self, holders: dict[str, list[_Holder]], hooks: dict[str, _PackageHook]) -> None:
        self._holders = holders
        self._hooks = hooks

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self._holders:
            return None
        spec = _find_after(self, name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, self)
        return spec

    def give(self, module: ModuleType) -> None:
        name = module.__name__
        if sys.modules.get(name) is not module:  # a private copy (module_from_spec)
            return
        hook = self._hooks.pop(name, None)
        if hook is not None:
            hook.loaded(name)
        loggers = self._holders.get("logging")
        if loggers is not None:  # a held module loaded now took asyncio's logger stand-in
            space = module.__dict__  # (sslproto's `from .log import logger`)
            loggers += [_Holder(space, k, v) for k, v in space.items() if type(v) is _Logger]
        for holder in self._holders.pop(name, ()):
            if holder.space.get(holder.key) is holder.stand_in:
                if type(holder.stand_in) is _Logger:
                    real: object = module.getLogger(holder.stand_in.name)
                else:
                    real = module
                holder.space[holder.key] = real
        if module.__name__ == "ssl":
            _give_ssl(module)
        if not self._holders and self in sys.meta_path:
            sys.meta_path.remove(self)

    def hold(self, stand_ins: dict[str, _Held], module: ModuleType) -> None:
        """``module`` was executed with ``stand_ins`` in place of modules it imports: the
        real one goes to its globals that hold a stand-in once it is loaded (at once, if
        another thread loaded it meanwhile)."""
        space = module.__dict__
        for name, stand_in in stand_ins.items():
            found = [_Holder(space, key, v) for key, v in space.items() if v is stand_in]
            if found:
                self._holders.setdefault(name, []).extend(found)
            real = sys.modules.get(name)
            if real is not None and not isinstance(real, _Held):
                self.give(real)


class _Loader:
    """A held module's own loader, then :meth:`_Finder.give`."""

    def __init__(self, inner: Any, finder: _Finder) -> None:
        self._inner = inner
        self._finder = finder

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        import _thread

        inner = self._inner
        stand_ins: dict[str, _Held] = {}
        if _thread._count() == 0:  # in sys.modules a stand-in is seen by every thread
            for name in _HELD_BY.get(module.__name__, ()):
                stand_in = _Held(name, {})
                if sys.modules.setdefault(name, stand_in) is stand_in:  # never over a real one
                    stand_ins[name] = stand_in
        try:
            inner.exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]
        _give_loader_back(module, self, inner)
        if stand_ins:
            self._finder.hold(stand_ins, module)
        self._finder.give(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
