"""asyncio without loading ``ssl`` until something uses TLS.

``import asyncio`` imports ``ssl`` (``_ssl`` loads OpenSSL): about 3.7 ms of a 10-file
run here, for a module a run without TLS never uses. :func:`import_asyncio` imports
asyncio with ``ssl`` hidden, then puts a stand-in in place of the ``ssl`` global of the
asyncio modules that use it. The first use of TLS loads the real module, whichever way
it comes:

- ``import ssl`` anywhere in the process (an ``SSLContext`` needs it: httpx, asyncssh,
  the etcd client's TLS files) goes through a finder that, once the module is loaded,
  gives it to asyncio (its ``ssl`` globals and ``sslproto.SSLAgainErrors``);
- asyncio itself reaching for ``ssl`` (``ssl=True`` with no context, ``start_tls``, a
  check of a socket's type) touches the stand-in, which imports the real module first.

So TLS works at any later point of the process exactly as with a plain ``import
asyncio`` (tests/cli/test_lazytls.py makes a TLS connection after a run's start-up).
"""

from __future__ import annotations

import sys
from types import ModuleType

TYPE_CHECKING = False  # as in convergent/__init__.py: typing is not imported for it
if TYPE_CHECKING:
    from typing import Any

__all__ = ["import_asyncio"]

_USERS = ("asyncio.sslproto", "asyncio.base_events", "asyncio.selector_events")


def import_asyncio() -> None:
    """Import asyncio, leaving ``ssl`` to be loaded on first use (nothing to do when
    asyncio or ssl is already imported)."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` fails: ssl = None
    try:
        import asyncio
        import asyncio.selector_events
        import asyncio.sslproto  # noqa: F401
    finally:
        del sys.modules["ssl"]
    stand_in = _StandIn("ssl")
    for name in _USERS:
        sys.modules[name].ssl = stand_in  # type: ignore[attr-defined]
    sys.meta_path.insert(0, _Finder())


def _give_asyncio(ssl: ModuleType) -> None:
    """What ``import asyncio`` would have found: the real module in every ``ssl`` global."""
    for name in _USERS:
        module = sys.modules.get(name)
        if module is not None:
            module.ssl = ssl  # type: ignore[attr-defined]
    sslproto = sys.modules["asyncio.sslproto"]
    sslproto.SSLAgainErrors = (ssl.SSLWantReadError, ssl.SSLSyscallError)  # type: ignore[attr-defined]


class _NoSSLSocket:
    """No object is one: until ``ssl`` is loaded, no ``ssl.SSLSocket`` can exist."""


class _StandIn(ModuleType):
    """In asyncio's ``ssl`` globals until TLS is used: any attribute loads the module,
    but ``SSLSocket``, which asyncio checks every socket it connects against (a plain
    connection, an etcd world's over HTTP, then loads no OpenSSL)."""

    SSLSocket = _NoSSLSocket

    def __getattr__(self, name: str) -> Any:
        import ssl

        return getattr(ssl, name)


class _Finder:
    """On a meta path for one import: the first ``import ssl``; hands the loaded module
    to asyncio, then leaves the meta path."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "ssl":
            return None
        sys.meta_path.remove(self)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)  # type: ignore[assignment]
        return spec


class _Loader:
    """The ``ssl`` module's own loader, and then :func:`_give_asyncio`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _give_asyncio(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
