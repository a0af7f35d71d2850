"""A plain policy's graph kept between runs, so that an unchanged policy is not read again.

``convergent run`` loads its policy at every start: from cron or a timer, after a restart.
A plain policy (the fast reader's shape, :mod:`convergent.policy.fast`) of 1,000 files
takes ~15 ms to read, convert and check; made again from what the run before kept, ~5 ms
(docs/performance.md, "The policy kept between runs"). What is kept, in
``STATE_DIR/policy.cache``:

- the policy's file name and bytes (compared whole), the Python and msgspec
  versions and this format's; a policy changed by one byte, or loaded under another name
  (messages name it), is read again;
- every convergent module the load had imported, with its inode, size and modification
  time: an upgrade or an edit of convergent's code reads the policy again;
- each resource's kind, name, parameters and meta parameters (msgpack, decoded into the
  kind's own types), the edges and what the policy collects, with a digest of them.

Only graphs the fast reader made are kept: its result depends on the text alone (no
``--set``, vars, facts, templates or includes), and on nothing of the host. Only built-in
kinds whose resources are made by :class:`~convergent.resources.base.Resource`'s own
``__init__``; a graph with secrets or bundle uses is not kept, nor one where a parameter
holds a credential (``user``'s ``password_hash``, a ``password``, ``env`` or ``headers``
values: :func:`~convergent.resources.params.holds_credentials`): the file holds the
policy's text and parameters, and no file of the state directory holds those. A resource
made again runs its kind's ``validate()`` (what the kind derives from its parameters), not
the conversion and the NUL check its parameters passed when they were first read.

Read before the state directory is opened (the load comes first, and a bad policy must
not create it), the file is trusted only from a directory of this user that no one else
may write, and as a regular file of this user that no one else may write; a run that used
it then checks that the directory it opened, with its checks of every parent
(:func:`~convergent.state.statedir.open_state_dir`), is the one it read from
(:meth:`PolicyCache.confirm`), or reads the policy again. Written only by an agent holding
the directory's lock (:meth:`PolicyCache.save`, not by ``--noop``), through a temp file and
a rename, without a sync: a file a crash left short or empty fails its digest and is read
as no cache. Anything wrong with it is a policy read as if there were none.
"""

from __future__ import annotations

import os
import stat
import sys
from binascii import crc32
from typing import TYPE_CHECKING, Any

import msgspec

from convergent.graph.collect import Collect
from convergent.graph.core import Edge, Graph
from convergent.resources.base import Meta, Resource, builtin_classes, get_kind
from convergent.resources.params import holds_credentials

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_CACHE_BYTES", "NAME", "PolicyCache", "decode_graph", "encode_graph"]

NAME = "policy.cache"
_TEMP = ".policy.cache.tmp"
_MAGIC = b"convergent policy cache 1\n"
#: The largest file read or written (a policy of 250,000 files makes ~45 MB).
MAX_CACHE_BYTES = 256 * 1024 * 1024
_DEFAULT_META = Meta()

Stamp = tuple[str, int, int, int]  # a module's file: path, inode, size, mtime (ns)


class _Saved(msgspec.Struct, array_like=True):
    key: tuple[str, str, str]  # the policy's file name, Python's version, msgspec's
    policy: bytes  # the policy's bytes, compared whole
    code: list[Stamp]
    check: int  # the body's CRC-32: a file a crash damaged is not read
    body: msgspec.Raw


class _Body(msgspec.Struct, array_like=True):
    runs: list[tuple[str, msgspec.Raw]]  # consecutive resources of one kind, in order
    edges: list[Edge]
    collect: list[Collect]


_SAVED = msgspec.msgpack.Decoder(_Saved)
_BODY = msgspec.msgpack.Decoder(_Body)
_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {}


def _key(filename: str) -> tuple[str, str, str]:
    return (filename, sys.version, msgspec.__version__)


def _code() -> list[Stamp] | None:
    """Every convergent module imported so far, as its file is now; None when one has no
    file of its own on disk (a zip archive): then nothing is kept."""
    found: list[Stamp] = []
    for name, module in list(sys.modules.items()):
        if name != "convergent" and not name.startswith("convergent."):
            continue
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            return None
        try:
            info = os.stat(file)
        except OSError:
            return None
        found.append((file, info.st_ino, info.st_size, info.st_mtime_ns))
    found.sort()
    return found


def _unchanged(code: list[Stamp]) -> bool:
    for file, ino, size, mtime in code:
        try:
            info = os.stat(file)
        except OSError:
            return False
        if (info.st_ino, info.st_size, info.st_mtime_ns) != (ino, size, mtime):
            return False
    return True


def _keepable(graph: Graph[Resource[Any]]) -> bool:
    if graph.secrets or graph.held or graph.clusters:
        return False
    builtin = builtin_classes()
    for resource in graph.vertices.values():
        cls = type(resource)
        if builtin.get(cls.__name__) != cls.__module__ or cls.__init__ is not Resource.__init__:
            return False
        if holds_credentials(resource.kind, resource.params):
            return False
    return True


def encode_graph(graph: Graph[Resource[Any]], filename: str, data: bytes) -> bytes | None:
    """The file's bytes for ``graph``, read from the policy ``filename`` whose bytes are
    ``data``; None when it is not kept."""
    code = _code()
    if code is None or not _keepable(graph):
        return None
    encode = msgspec.msgpack.encode
    runs: list[tuple[str, msgspec.Raw]] = []
    kind = ""
    run: list[tuple[str, Any, Meta | None]] = []
    for resource in graph.vertices.values():
        if resource.kind != kind:
            if run:
                runs.append((kind, msgspec.Raw(encode(run))))
            kind, run = resource.kind, []
        meta = None if resource.meta == _DEFAULT_META else resource.meta
        run.append((resource.name, resource.params, meta))
    if run:
        runs.append((kind, msgspec.Raw(encode(run))))
    body = encode(_Body(runs, list(graph.edges()), list(graph.collect)))
    saved = _Saved(_key(filename), data, code, crc32(body), msgspec.Raw(body))
    blob = _MAGIC + encode(saved)
    return blob if len(blob) <= MAX_CACHE_BYTES else None


def decode_graph(blob: bytes, filename: str, data: bytes) -> Graph[Resource[Any]] | None:
    """The graph ``blob`` holds for the policy ``filename`` whose bytes are ``data``, or
    None (another policy, convergent's code changed since, a damaged file, a parameter
    its kind refuses now)."""
    if not blob.startswith(_MAGIC):
        return None
    try:
        saved = _SAVED.decode(memoryview(blob)[len(_MAGIC) :])
        if saved.key != _key(filename) or saved.policy != data or not _unchanged(saved.code):
            return None
        if crc32(saved.body) != saved.check:
            return None
        parts = _BODY.decode(saved.body)
        vertices: dict[str, Resource[Any]] = {}
        for kind, raw in parts.runs:
            cls = get_kind(kind)
            if cls is None:
                return None
            decoder = _decoders.get(kind)
            if decoder is None:
                shape = list[tuple[str, cls.params_type, Meta | None]]  # type: ignore[name-defined]
                decoder = _decoders[kind] = msgspec.msgpack.Decoder(shape)
            make: Callable[..., Resource[Any]] = cls.restored
            for name, params, meta in decoder.decode(raw):
                resource = make(name, params, meta or _DEFAULT_META)
                vertices[resource.id] = resource
        graph = Graph.of(vertices, parts.edges)
        graph.collect = tuple(parts.collect)
    except Exception:  # anything amiss is no cache: the policy is read
        return None
    return graph


class PolicyCache:
    """One run's use of ``STATE_DIR/policy.cache`` (see the module docstring)."""

    __slots__ = ("_data", "_filename", "_pending", "_read_from", "path")

    def __init__(self, path: str) -> None:
        self.path = path  # the state directory, absolute
        self._filename = ""
        self._data: bytes | None = None  # the policy's bytes, until remember()
        self._pending: bytes | None = None  # what save() writes
        self._read_from: tuple[int, int] | None = None  # the directory of a graph used

    def lookup(self, filename: str, data: bytes) -> Graph[Resource[Any]] | None:
        """The graph kept for the policy ``filename`` whose bytes are ``data``, or None."""
        blob, where = _read(self.path)
        graph = decode_graph(blob, filename, data) if blob else None
        if graph is not None:
            self._read_from = where
        else:
            self._filename, self._data = filename, data
        return graph

    def remember(self, graph: Graph[Resource[Any]]) -> None:
        """Keep ``graph``, which the fast reader made from the bytes :meth:`lookup` saw."""
        data, self._data = self._data, None
        if data is not None:
            self._pending = encode_graph(graph, self._filename, data)

    def confirm(self, opened: str) -> bool:
        """After the state directory ``opened`` passed its checks: False when the graph
        :meth:`lookup` gave came from another directory (the caller reads the policy)."""
        if self._read_from is None:
            return True
        try:
            info = os.stat(opened)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._read_from

    def save(self, opened: str) -> None:
        """Write what :meth:`remember` kept into the state directory ``opened`` (its lock
        held); a failure (full, read-only) leaves the cache as it was."""
        blob, self._pending = self._pending, None
        if blob is None:
            return
        try:
            directory = os.open(opened, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fd = os.open(
                _TEMP,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=directory,
            )
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.rename(_TEMP, NAME, src_dir_fd=directory, dst_dir_fd=directory)
        except OSError:
            pass
        finally:
            os.close(directory)


def _read(path: str) -> tuple[bytes, tuple[int, int] | None]:
    """The cache file's bytes in the directory ``path`` and that directory's identity, or
    ``b""`` when there is none or it is not to be trusted."""
    try:
        directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return b"", None
    try:
        where = os.fstat(directory)
        uid = os.geteuid()
        if where.st_uid != uid or where.st_mode & 0o022:
            return b"", None
        fd = os.open(
            NAME,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
            dir_fd=directory,
        )
        with open(fd, "rb") as file:
            info = os.fstat(fd)
            if (
                not stat.S_ISREG(info.st_mode)
                or info.st_uid != uid
                or info.st_mode & 0o022
                or info.st_size > MAX_CACHE_BYTES
            ):
                return b"", None
            blob = file.read(MAX_CACHE_BYTES + 1)
    except OSError:
        return b"", None
    finally:
        os.close(directory)
    if len(blob) > MAX_CACHE_BYTES:
        return b"", None
    return blob, (where.st_dev, where.st_ino)
