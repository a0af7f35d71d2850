"""A plain policy's graph kept between runs, so that an unchanged policy is not read again.

``convergent run`` loads its policy at every start: from cron or a timer, after a restart.
A plain policy (the fast reader's shape, :mod:`convergent.policy.fast`) of 1,000 files
takes ~15 ms to read, convert and check; made again from what the run before kept, ~5 ms
(docs/performance.md, "The policy kept between runs"). What is kept, in
``STATE_DIR/policy.cache``:

- the key: the policy's file name (messages name it), a BLAKE2b digest of its bytes, the
  directory convergent runs from, the Python and msgspec versions; another policy, a
  policy edited by one byte, or another installation reads the policy again;
- every convergent module the process had imported when the graph was kept (those the
  load ran among them), with its inode, size and modification time: an upgrade or an
  edit in place reads the policy again;
- each resource's kind, name, the parameters and meta parameters the policy gave
  (msgpack, decoded into the kind's own types: those it did not give are the types'
  own defaults, as when read), the edges in both of the graph's orders and what the
  policy collects, with a CRC-32 of them.

Only policies of :data:`CACHE_FROM` bytes or more (a shorter one costs no more to read
than to make again), and only graphs the fast reader made: its result depends on the
text alone (no ``--set``, vars, facts, templates or includes), and on nothing of the
host. Only built-in kinds whose resources are made by
:class:`~convergent.resources.base.Resource`'s own ``__init__``. A graph with secrets or
bundle uses is not kept, nor one where a parameter holds a credential by its name or
place (``user``'s ``password_hash``, a ``password``, ``env`` or ``headers`` values, a URL
with a user or a query: :func:`~convergent.resources.params.holds_credentials`). What a
policy writes in a file's ``content`` or a command's arguments is kept as its own file
holds it, in a 0600 file of the 0700 state directory. A resource made again runs its
kind's ``validate()`` (what the kind derives from its parameters), not the conversion
and the NUL check its parameters passed when they were first read.

Read before the state directory is opened (the load comes first, and a bad policy must
not create it), the file is trusted only from a directory of this user that no one else
may write, and as a regular file of this user that no one else may write, opened without
following a symlink or waiting on a FIFO. A run that used it then checks that the
directory it locked (:meth:`~convergent.state.statedir.StateDir.directory`, after
:func:`~convergent.state.statedir.open_state_dir` checked every parent) is the one it read
from (:meth:`PolicyCache.confirm`), or reads the policy again. Written only by an agent
holding that lock, never by ``--noop`` (:meth:`PolicyCache.save`): through that
directory's descriptor, into a new temp file, then a rename; without a sync, as a file a
crash left short or with zeros fails its CRC and is read as no cache. Anything wrong with
it is a policy read as if there were none.
"""

import contextlib
import os
import stat
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from convergent.graph.collect import Collect
from convergent.graph.core import Edge, Graph
from convergent.host.atomic import write_all
from convergent.policy.entries import CACHE_FROM
from convergent.resources.base import Meta, Resource, builtin_classes, get_kind
from convergent.resources.params import holds_credentials

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CACHE_FROM", "MAX_CACHE_BYTES", "NAME", "PolicyCache", "decode_graph", "encode_graph"]

NAME = "policy.cache"
_TEMP = ".policy.cache.tmp"
_MAGIC = b"convergent policy cache 2\n"
#: The largest file read or written (a policy of 250,000 plain files makes ~16 MB).
MAX_CACHE_BYTES = 256 * 1024 * 1024
_DEFAULT_META = Meta()

Stamp = tuple[str, int, int, int]  # a module's file: path, inode, size, mtime (ns)
Key = tuple[str, bytes, str, str, str]  # policy name and digest, convergent's directory...


class _Head(msgspec.Struct, array_like=True):
    key: Key
    code: list[Stamp]
    check: int  # the body's CRC-32
    size: int  # the body's length


class _Body(msgspec.Struct, array_like=True):
    runs: list[tuple[str, msgspec.Raw]]  # consecutive resources of one kind, in order
    edges: list[Edge]  # in Graph.edges() order
    into: list[tuple[str, list[str]]]  # Graph.into()
    collect: list[Collect]


_decoders: dict[object, msgspec.msgpack.Decoder[Any]] = {}  # made on first use


def _decoder(shape: Any) -> msgspec.msgpack.Decoder[Any]:
    decoder = _decoders.get(shape)
    if decoder is None:
        decoder = _decoders[shape] = msgspec.msgpack.Decoder(shape)
    return decoder


def _crc32(data: bytes | memoryview) -> int:
    from binascii import crc32  # an extension module a run without the cache never loads

    return crc32(data)


_fields: dict[type, tuple[tuple[str, Any], ...]] = {}


#: The directory of the convergent package that runs (this module's grandparent).
_HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def key(filename: str, data: bytes, home: str = _HOME) -> Key:
    """What a kept graph must have been read from and by, for ``data`` read as ``filename``
    by the convergent package in ``home``."""
    try:  # hashlib's own import loads OpenSSL, ~2.5 ms of a run; BLAKE2 is built in apart
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - every CPython has it
        from hashlib import blake2b

    digest = blake2b(data, digest_size=32).digest()
    return (filename, digest, home, sys.version, msgspec.__version__)


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


def _given(value: msgspec.Struct) -> dict[str, Any]:
    """The fields of ``value`` that do not hold their default (the very object the type
    gives a field left out), so that decoding gives the rest the same defaults."""
    cls = type(value)
    fields = _fields.get(cls)
    if fields is None:
        fields = _fields[cls] = tuple((f.name, f.default) for f in msgspec.structs.fields(cls))
    values = msgspec.structs.astuple(value)
    return {
        name: got for (name, default), got in zip(fields, values, strict=True) if got is not default
    }


def encode_graph(graph: Graph[Resource[Any]], key: Key) -> list[bytes] | None:
    """The pieces of the file for ``graph`` read under ``key`` (written one after the
    other, not joined: a copy less of what may be tens of megabytes), or None when it is
    not kept."""
    code = _code()
    if code is None or not _keepable(graph):
        return None
    encode = msgspec.msgpack.encode
    runs: list[tuple[str, msgspec.Raw]] = []
    kind = ""
    run: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    for resource in graph.vertices.values():
        if resource.kind != kind:
            if run:
                runs.append((kind, msgspec.Raw(encode(run))))
            kind, run = resource.kind, []
        meta = None if resource.meta == _DEFAULT_META else _given(resource.meta)
        run.append((resource.name, _given(resource.params), meta))
    if run:
        runs.append((kind, msgspec.Raw(encode(run))))
    del run
    body = encode(_Body(runs, list(graph.edges()), list(graph.into()), list(graph.collect)))
    del runs
    head = encode(_Head(key, code, _crc32(body), len(body)))
    if len(_MAGIC) + 4 + len(head) + len(body) > MAX_CACHE_BYTES:
        return None
    return [_MAGIC + len(head).to_bytes(4, "little"), head, body]


def decode_graph(blob: bytes, key: Key) -> Graph[Resource[Any]] | None:
    """The graph ``blob`` holds for ``key``, or None (another policy or convergent, code
    changed since, a damaged file, a parameter its kind refuses now)."""
    if not blob.startswith(_MAGIC):
        return None
    try:
        view = memoryview(blob)
        start = len(_MAGIC) + 4
        end = start + int.from_bytes(view[len(_MAGIC) : start], "little")
        head = _decoder(_Head).decode(view[start:end])
        if tuple(head.key) != key or not _unchanged(head.code):
            return None
        body = view[end:]
        if len(body) != head.size or _crc32(body) != head.check:
            return None
        parts = _decoder(_Body).decode(body)
        vertices: dict[str, Resource[Any]] = {}
        for kind, raw in parts.runs:
            cls = get_kind(kind)
            if cls is None:
                return None
            decoder = _decoder(list[tuple[str, cls.params_type, Meta | None]])  # type: ignore[name-defined]
            make: Callable[..., Resource[Any]] = cls.restored
            for name, params, meta in decoder.decode(raw):
                resource = make(name, params, meta or _DEFAULT_META)
                vertices[resource.id] = resource
        graph = Graph.of(vertices, parts.edges, parts.into)
        graph.collect = tuple(parts.collect)
    except Exception:  # anything amiss is no cache: the policy is read
        return None
    return graph


class PolicyCache:
    """One run's use of ``STATE_DIR/policy.cache`` (see the module docstring)."""

    __slots__ = ("_graph", "_key", "_read_from", "path")

    def __init__(self, path: str) -> None:
        self.path = path  # the state directory, absolute
        self._key: Key | None = None
        self._graph: Graph[Resource[Any]] | None = None  # read, for save()
        self._read_from: tuple[int, int] | None = None  # the directory of a graph used

    def lookup(self, filename: str, data: bytes) -> Graph[Resource[Any]] | None:
        """The graph kept for the policy ``filename`` whose bytes are ``data``, or None
        (always for a policy shorter than :data:`CACHE_FROM`, which is not kept either)."""
        if len(data) < CACHE_FROM:
            return None
        self._key = key(filename, data)
        blob, where = _read(self.path)
        graph = decode_graph(blob, self._key) if blob else None
        if graph is not None:
            self._read_from = where
        return graph

    def remember(self, graph: Graph[Resource[Any]]) -> None:
        """Keep ``graph``, which the fast reader made from the bytes :meth:`lookup` saw
        (encoded by :meth:`save`, once the load's own memory is freed)."""
        if self._key is not None and self._read_from is None:
            self._graph = graph

    @property
    def used(self) -> bool:
        """Whether :meth:`lookup` gave a kept graph."""
        return self._read_from is not None

    def confirm(self, directory: int) -> bool:
        """False when the graph :meth:`lookup` gave came from another directory than
        ``directory`` (the locked state directory's descriptor): the caller reads the
        policy again."""
        if self._read_from is None:
            return True
        info = os.fstat(directory)
        return (info.st_dev, info.st_ino) == self._read_from

    def save(self, directory: int) -> None:
        """Write the graph :meth:`remember` kept into ``directory`` (the locked state
        directory's descriptor); a failure (full, read-only) leaves the cache as it was."""
        graph, self._graph = self._graph, None
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_TEMP, dir_fd=directory)  # what a killed run left
        except OSError:
            return
        if graph is None or self._key is None:
            return
        pieces = encode_graph(graph, self._key)
        if pieces is None:
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(_TEMP, flags, 0o600, dir_fd=directory)
            try:
                for piece in pieces:
                    write_all(fd, piece)
            finally:
                os.close(fd)
            os.rename(_TEMP, NAME, src_dir_fd=directory, dst_dir_fd=directory)
        except OSError:
            pass


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
