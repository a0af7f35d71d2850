"""The C library calls that the ``os`` module lacks (``prctl``, ``inotify_*``,
``name_to_handle_at``, ``syncfs``, the ``openat2`` system call), bound through ctypes'
C core alone.

``import ctypes`` runs the Python package around ``_ctypes`` (its classes, ``struct``,
the byte-order module): ~1 ms here, on the path of most starts (the first command's
death signal, the first file watched, written or synced). What a binding needs of it
is a few lines: the C types by their ``struct`` codes, a function pointer type that
keeps ``errno``, and a handle of the process's own symbols. Measured in the agent:
1.38-1.68 ms for the ``prctl`` binding through ``ctypes`` against 0.44-0.65 ms through
``_ctypes`` (docs/performance.md); each type below costs ~30-60 us to make. Where
``_ctypes`` is not as this module expects (another Python), the ``ctypes`` package gives
the same names.

:func:`function` finds a function of the C library with its argument and result types;
``get_errno`` and ``byref`` are ctypes' own. No ``Structure``: newer Pythons' ctypes core
imports the ``ctypes`` package to lay one out; a structure is packed with ``struct``
into bytes (read by the call) or a ``c_ubyte`` array (written by it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

__all__ = [
    "byref",
    "c_char_p",
    "c_int",
    "c_long",
    "c_ubyte",
    "c_uint32",
    "c_ulong",
    "c_void_p",
    "function",
    "get_errno",
]

# The C types, as ctypes defines them on Linux (LP64): each is its struct code.
_CODES = {
    "c_ubyte": "B",
    "c_int": "i",
    "c_uint32": "I",
    "c_long": "l",
    "c_ulong": "L",
    "c_char_p": "z",
    "c_void_p": "P",
}

try:
    from _ctypes import FUNCFLAG_CDECL, FUNCFLAG_USE_ERRNO, CFuncPtr, _SimpleCData, dlopen
except ImportError:  # not CPython's ctypes core: the package has the same names
    _CORE = False
else:
    _CORE = True

if TYPE_CHECKING or not _CORE:
    from ctypes import (
        byref,
        c_char_p,
        c_int,
        c_long,
        c_ubyte,
        c_uint32,
        c_ulong,
        c_void_p,
        get_errno,
    )

    _FuncPtr: Any = None
else:
    from _ctypes import byref, get_errno

    globals().update(
        (name, type(name, (_SimpleCData,), {"_type_": code})) for name, code in _CODES.items()
    )

    class _FuncPtr(CFuncPtr):
        """A C function; ``errno`` kept for :func:`get_errno` (``use_errno=True``)."""

        _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
        _restype_ = c_int


class _Library:
    """What a function pointer is looked up in: an object with a ``_handle``."""

    __slots__ = ("_handle",)

    def __init__(self, handle: int) -> None:
        self._handle = handle


@functools.cache
def _own() -> _Library:
    """The process's own symbols (``dlopen(NULL)``: the C library the interpreter uses)."""
    return _Library(dlopen(None, 0))  # type: ignore[arg-type]  # NULL; _ctypes adds RTLD_NOW


def function(name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
    """The C library's ``name`` with these types; ``errno`` after a call: :func:`get_errno`.

    AttributeError (the loader's message, naming the symbol) when the C library has no
    such function. Only an interpreter linked statically, whose own symbols lack even
    ``getpid``, is given the shared C library instead (as ctypes' ``find_library("c")``
    names it)."""
    if _FuncPtr is None:
        return _from_package(name, restype, argtypes)
    try:
        found: Any = _FuncPtr((name, _own()))
    except AttributeError:
        try:
            _FuncPtr(("getpid", _own()))
        except AttributeError:  # no C library among the process's symbols
            return _from_package(name, restype, argtypes)
        raise
    found.restype = restype
    found.argtypes = argtypes
    call: Callable[..., Any] = found
    return call


def _from_package(name: str, restype: Any, argtypes: tuple[Any, ...]) -> Callable[..., Any]:
    """``name`` through the ctypes package: the process's symbols, else the C library."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, name) and not hasattr(libc, "getpid"):  # a statically linked Python
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    found: Any = getattr(libc, name)
    found.restype = restype
    found.argtypes = argtypes
    call: Callable[..., Any] = found
    return call
