"""The resource contract, the parameter base types and the kind registry.

A resource is a typed, named unit of desired state, identified as ``kind[name]``.
Subclassing registers a kind::

    class FileParams(Params):
        path: str | None = None
        content: str | None = None

    class File(Resource[FileParams], kind="file"):
        async def watch(self, ctx: Context) -> None: ...
        async def check(self, ctx: Context) -> Change | None: ...
        async def apply(self, ctx: Context, change: Change) -> str | None: ...

The contract (``docs/architecture.md`` has the whole text):

- ``watch`` runs for as long as the resource is in the graph. It calls ``ctx.ready()``
  once it is watching, then ``ctx.event()`` whenever the real thing may have changed.
  A spurious event is fine; a missed event is a bug. The engine never calls ``check``
  before ``ready()``. A kind whose watching is only callbacks may instead define a
  synchronous ``subscribe(ctx) -> unsubscribe`` (see
  :class:`~convergent.resources.abilities.Subscribes`): no task.
- ``check`` never mutates anything. It returns None when the state is already right,
  otherwise a :class:`Change` that describes itself.
- ``apply`` makes that change and is idempotent. It may return a past-tense summary
  for the report (``"ran (0.01 s)"``); None reports ``change.summary``.
- noop is the engine's business: under noop only ``check`` runs.

What a kind may add (refresh, outputs, grouping, reversal...) is in
:mod:`convergent.resources.abilities`.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from convergent.errors import ParamError
from convergent.hints import as_types
from convergent.resources.params import convert_params, param_fields, reject_nul

if typing.TYPE_CHECKING:
    from convergent.state.db import StateDB
    from convergent.world.base import World

__all__ = [
    "ENTRY_POINTS",
    "Change",
    "Context",
    "Meta",
    "Params",
    "Resource",
    "builtin_classes",
    "builtin_kinds",
    "convert_params",
    "get_kind",
    "kinds",
    "param_fields",
    "reject_nul",
    "unknown_kind",
]


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """Base of every kind's parameters: frozen, unknown fields rejected. Never tracked by
    the cyclic collector (``gc=False``: 16 bytes less each; frozen parameters of plain
    values never take part in a reference cycle)."""


class Meta(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Meta parameters the engine applies to every kind (a ``meta:`` block in a policy).

    Durations are in seconds. Values no field type can rule out (a negative delay, a
    finite limit with no burst, a semaphore of size 0) raise ParamError naming the field.

    noop: check only and report what would change, never apply (the global --noop wins)
    retry: how many times a failed check/apply, or a failed watch, is tried again; -1: forever
    delay: seconds to wait before each retry
    backoff: "exponential" doubles the delay after each failed try, up to max_delay
    max_delay: the longest delay exponential backoff grows to, in seconds
    jitter: random spread of each delay, a fraction from 0 to 1 (0.1: up to 10% either way)
    poll: 0: watch for changes; more: do not watch, check every that many seconds
    limit: most check/apply runs per second; events beyond it are coalesced, never lost
    burst: runs allowed at once before limit applies; a finite limit needs 1 or more
    sema: semaphores held during check/apply, "id" (one at a time) or "id:N" (N at a time)
    autoedge: add edges to the managed resources this one needs (a file's directory...)
    autogroup: let the engine merge this resource with compatible ones into one vertex
    rewatch: restart a watch that failed for good when a new graph is applied
    reverse: undo what this resource did when it is removed from the graph
    timeout: seconds one check/apply may take; longer is a failure that counts as a try
    export: publish for other hosts to collect (true, or the hosts that may); not applied here
    wait_timeout: seconds to wait for a received world[HOST].NAME value before failing
    destroy: what ``convergent destroy`` does with it: "remove" or "keep" (not set: the
        kind's default)
    """

    noop: bool = False
    retry: int = 0
    delay: float = 0.0
    backoff: typing.Literal["none", "exponential"] = "none"
    max_delay: float = 60.0
    jitter: float = 0.0
    poll: float = 0.0
    limit: float = float("inf")
    burst: int = 0
    sema: list[str] = []
    autoedge: bool = True
    autogroup: bool = True
    rewatch: bool = False
    reverse: bool = False
    timeout: float | None = None
    export: bool | list[str] = False
    wait_timeout: float | None = None
    destroy: typing.Literal["remove", "keep"] | None = None

    def __post_init__(self) -> None:
        # ParamError, not ValueError: msgspec would turn a ValueError into an error
        # without the field, and the policy loader points at the field's value.
        inf = float("inf")
        if self.retry < -1:
            raise ParamError(
                "retry", f"give -1 (forever), 0 (no retry) or a number of retries, not {self.retry}"
            )
        if not 0 <= self.delay < inf:
            raise ParamError("delay", f"must be 0 or a number of seconds > 0, not {self.delay}")
        if not 0 <= self.poll < inf:
            raise ParamError("poll", f"must be 0 or a number of seconds > 0, not {self.poll}")
        if not 0 < self.max_delay < inf:
            raise ParamError("max_delay", f"must be a number of seconds > 0, not {self.max_delay}")
        if self.backoff == "exponential":
            if self.delay == 0:
                raise ParamError(
                    "backoff", "exponential backoff grows from the delay: set a delay > 0"
                )
            if self.max_delay < self.delay:
                raise ParamError(
                    "max_delay",
                    f"{self.max_delay:g} is shorter than the delay ({self.delay:g}); "
                    "exponential backoff needs max_delay >= delay",
                )
        if not 0 <= self.jitter <= 1:
            raise ParamError("jitter", f"a fraction from 0 to 1 (0.1: 10%), not {self.jitter}")
        if self.limit != inf or self.burst:
            if not self.limit > 0:
                raise ParamError(
                    "limit",
                    f"runs per second must be more than 0 (.inf: no limit), not {self.limit}",
                )
            if self.burst < 0:
                raise ParamError("burst", f"must be 0 or more, not {self.burst}")
            if self.limit != inf and self.burst == 0:
                raise ParamError(
                    "limit",
                    f"a limit of {self.limit:g} per second with burst 0 could never run; "
                    "add burst: 1 (or more)",
                )
        if self.timeout is not None and not 0 < self.timeout < inf:
            raise ParamError(
                "timeout",
                f"must be a number of seconds > 0 (leave it out for none), not {self.timeout}",
            )
        if self.wait_timeout is not None and not 0 < self.wait_timeout < inf:
            raise ParamError(
                "wait_timeout",
                f"must be a number of seconds > 0 (leave it out to wait forever), "
                f"not {self.wait_timeout}",
            )
        if self.sema:
            self.semaphores()

    def semaphores(self) -> list[tuple[str, int]]:
        """``sema`` as ``(id, size)`` pairs: ``"db"`` is ``("db", 1)``, ``"db:2"`` ``("db", 2)``.

        Text after the last ``:`` that is not a whole number is part of the id (as in
        mgmt). Raises ParamError for an empty id, a size below 1 or an id listed twice.
        """
        found: list[tuple[str, int]] = []
        seen: set[str] = set()
        for i, text in enumerate(self.sema):
            sema_id, size = text, 1
            head, sep, tail = text.rpartition(":")
            if sep and tail.removeprefix("-").isdecimal():
                sema_id, size = head, int(tail)
            if not sema_id.strip():
                raise ParamError(f"sema[{i}]", f"{text!r}: a semaphore needs an id, e.g. 'db:2'")
            if size < 1:
                raise ParamError(
                    f"sema[{i}]", f"{text!r}: a semaphore's size must be 1 or more, not {size}"
                )
            if sema_id in seen:
                raise ParamError(f"sema[{i}]", f"{text!r}: semaphore '{sema_id}' is listed twice")
            seen.add(sema_id)
            found.append((sema_id, size))
        return found


as_types(Meta)  # decoded from the policy cache (hints.py)


class Change:
    """What ``check`` found different: a one-line summary and, for content, a unified diff.

    A grouped vertex (several resources merged into one) puts each member's change in
    ``members``, keyed by the member's ``kind[name]``, so reports keep their identities.
    A plain class, not a dataclass (making one costs ~0.7 ms of start-up): equal when of
    the same class with equal summary, diff and members.
    """

    summary: str
    diff: str | None
    members: dict[str, Change] | None

    def __init__(
        self, summary: str, diff: str | None = None, members: dict[str, Change] | None = None
    ) -> None:
        self.summary = summary
        self.diff = diff
        self.members = members

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Change) or other.__class__ is not self.__class__:
            return NotImplemented
        return (self.summary, self.diff, self.members) == (
            other.summary,
            other.diff,
            other.members,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: like a dataclass, unhashable

    def __repr__(self) -> str:
        return (
            f"{type(self).__qualname__}(summary={self.summary!r}, diff={self.diff!r}, "
            f"members={self.members!r})"
        )


S = TypeVar("S")


_NONE: frozenset[str] = frozenset()  # one empty set for every context, not one each


class Context:
    """The capabilities a resource gets from the engine; there is no global state.

    ``refresh`` holds the identities of upstream resources whose refresh is pending
    for this check/apply (empty when there is none). ``received_changed`` names the
    parameters received from upstream outputs (``recv``) whose value differs from the
    one of the last successful check (all of them at the first check). ``state`` is the
    host's durable state database (None when the run has none, e.g. under noop on a new
    host): kinds keep what is theirs alone there (a password's secret). ``world`` is the
    key/value store the resources of a run share (:class:`~convergent.world.base.World`).
    """

    __slots__ = ("_calls", "_world", "id", "received_changed", "refresh", "state")

    def __init__(
        self,
        resource_id: str,
        *,
        ready: Callable[[], None],
        event: Callable[[], None],
        log: Callable[[str], None],
        shared: Callable[[Callable[[], Any]], Any],
        state: StateDB | None = None,
        world: World | None = None,
    ) -> None:
        """``world``: the run's world; left out, the local world over ``state`` (one per
        run, made on first use through ``shared``)."""
        self.id = resource_id
        self.refresh: frozenset[str] = _NONE
        self.received_changed: frozenset[str] = _NONE
        self.state = state
        # The four callables, in one object: a subclass keeps one pointer of its own here
        # (engine/context.py: the worker) instead of four.
        self._calls: Any = _Calls(ready, event, log, shared)
        self._world = world

    def ready(self) -> None:
        """Say that ``watch`` is now watching: from here on no change goes unnoticed."""
        self._calls.ready()

    def event(self) -> None:
        """Say that the real thing may have changed: the engine will check again."""
        self._calls.event()

    def log(self, message: str) -> None:
        """Log a line under this resource's ``kind[name]``."""
        self._calls.log(message)

    def shared(self, factory: Callable[[], S]) -> S:
        """One instance of ``factory()`` per engine run, shared by every resource.

        Used for things like one inotify descriptor for all files. ``factory`` is the
        key: the same function (or equal callables) gets the same instance. When the run
        ends, the engine closes each instance: if it has an ``aclose()`` coroutine method
        it is awaited, else if it has ``close()`` that is called (a D-Bus connection or
        an etcd client closes asynchronously, an inotify descriptor synchronously).
        """
        result: S = self._calls.shared(factory)
        return result

    @property
    def world(self) -> World:
        """The key/values shared by the run's resources (and, with etcd, by its hosts)."""
        world = self._world
        if world is None:
            from convergent.world.local import LocalWorldFactory

            world = self._world = self.shared(LocalWorldFactory(self.state))
        return world

    def for_member(
        self, member_id: str, *, ready: Callable[[], None], log: Callable[[str], None]
    ) -> Context:
        """A Context for a member of this (group) resource: its own identity, ready and
        log; the same events, services, state and world; no refresh yet."""
        return Context(
            member_id,
            ready=ready,
            event=self._calls.event,
            log=log,
            shared=self._calls.shared,
            state=self.state,
            world=self._world,
        )


class _Calls:
    """A plain :class:`Context`'s callables."""

    __slots__ = ("event", "log", "ready", "shared")

    def __init__(
        self,
        ready: Callable[[], None],
        event: Callable[[], None],
        log: Callable[[str], None],
        shared: Callable[[Callable[[], Any]], Any],
    ) -> None:
        self.ready = ready
        self.event = event
        self.log = log
        self.shared = shared


P = TypeVar("P", bound=Params)

_REGISTRY: dict[str, type[Resource[Any]]] = {}
# The built-in kinds, "kind": "module:Class". Adding a kind is its module, its tests and
# one line here. They are imported on first use, so a policy of files never imports exec.
_BUILTIN: dict[str, str] = {
    "cron": "convergent.resources.cron:Cron",
    "download": "convergent.resources.download:Download",
    "exec": "convergent.resources.exec:Exec",
    "file": "convergent.resources.file:File",
    "group": "convergent.resources.groupacct:Group",
    "kv": "convergent.resources.kv:Kv",
    "line": "convergent.resources.line:Line",
    "noop": "convergent.resources.noop:Noop",
    "password": "convergent.resources.password:Password",
    "pkg": "convergent.resources.pkg:Pkg",
    "process": "convergent.resources.process:Process",
    "svc": "convergent.resources.svc:Svc",
    "timer": "convergent.resources.timer:Timer",
    "user": "convergent.resources.user:User",
    "value": "convergent.resources.value:Value",
}
ENTRY_POINTS = "convergent.kinds"  # the entry-point group plug-in kinds are found in
_plugins: dict[str, Any] | None = None  # entry points by kind name, read once when needed
_broken: dict[str, str] = {}  # why a plug-in kind could not be loaded, by kind name


class Resource(Generic[P]):
    """Base of every kind. ``Resource[FooParams]`` binds the parameter type."""

    kind: ClassVar[str]
    params_type: ClassVar[type[Params]]

    __slots__ = ("_rid", "meta", "name", "params")
    _rid: str

    def __init_subclass__(cls, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Resource:
                (cls.params_type,) = typing.get_args(base)
        if kind is not None:
            if kind in _REGISTRY and _REGISTRY[kind] is not cls:
                raise TypeError(
                    f"resource kind {kind!r} is already registered by {_REGISTRY[kind]}"
                )
            builtin = _BUILTIN.get(kind)
            if builtin is not None and builtin != f"{cls.__module__}:{cls.__qualname__}":
                raise TypeError(
                    f"resource kind {kind!r} is built into convergent ({builtin}); "
                    f"{cls.__module__}.{cls.__qualname__} cannot take its name: choose another"
                )
            cls.kind = kind
            _REGISTRY[kind] = cls

    def __init__(
        self, name: str, params: P | None = None, *, meta: Meta | None = None, **fields: Any
    ) -> None:
        """``File("/etc/motd", content="hi\\n")`` or ``File("/etc/motd", FileParams(...))``.

        Raises ParamError when a field is unknown, has the wrong type, holds a NUL byte
        (:func:`reject_nul`) or fails :meth:`validate`.
        """
        if not name:
            raise ParamError(None, f"{self.kind}: a resource needs a non-empty name")
        if "\0" in name:
            raise ParamError(None, "the name contains a NUL byte (\\0); remove it")
        self.name = name
        if params is None:
            params = typing.cast(P, convert_params(self.params_type, fields))
        elif fields:
            raise TypeError("pass either a Params object or keyword fields, not both")
        reject_nul(params)
        self.params: P = params
        self.meta = meta if meta is not None else Meta()
        self.validate()

    @classmethod
    def restored(cls, name: str, params: P, meta: Meta) -> Resource[P]:
        """The resource a validated one of this kind with these values was, made again
        (a policy kept between runs, policy/cache.py): only :meth:`validate` runs, for
        what the kind derives from its parameters; the name's and the parameters' checks
        of :meth:`__init__` were passed when they were first read."""
        resource = cls.__new__(cls)
        resource.name = name
        resource.params = params
        resource.meta = meta
        resource.validate()
        return resource

    @property
    def id(self) -> str:
        """``kind[name]``, made once (the engine asks often; one string per resource)."""
        try:
            return self._rid
        except AttributeError:
            rid = self._rid = f"{self.kind}[{self.name}]"  # format_id, inlined
            return rid

    def __repr__(self) -> str:
        return f"<{self.id}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource):
            return NotImplemented
        return (self.kind, self.name, self.params, self.meta) == (
            other.kind,
            other.name,
            other.params,
            other.meta,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.name))

    # -- the contract -----------------------------------------------------------------

    def validate(self) -> None:
        """Reject parameter values the types alone cannot (raise ParamError naming the field)."""

    async def watch(self, ctx: Context) -> None:
        """Watch the real thing. The default: for a kind with ``subscribe``, subscribe, wait,
        unsubscribe when cancelled; for a kind with nothing to watch, ready, then wait."""
        subscribe: Callable[[Context], Callable[[], None]] | None = getattr(self, "subscribe", None)
        if subscribe is None:
            ctx.ready()
            await asyncio.Event().wait()
            return
        unsubscribe = subscribe(ctx)
        try:
            await asyncio.Event().wait()
        finally:
            unsubscribe()

    async def check(self, ctx: Context) -> Change | None:
        """Read only: None when the state is right, otherwise the Change that apply makes."""
        raise NotImplementedError

    async def apply(self, ctx: Context, change: Change) -> str | None:
        """Make ``change`` (idempotent); return a past-tense summary, or None for the change's."""
        raise NotImplementedError


def get_kind(kind: str) -> type[Resource[Any]] | None:
    """The class registered for ``kind``, importing a built-in kind on first use.

    A kind that is neither registered nor built in is looked up in the ``convergent.kinds``
    entry points (the entry's name is the kind, its value the module that defines it or
    ``module:Class``). Entry points are read only then: a policy of built-in kinds never
    pays for ``importlib.metadata``. None when no one provides the kind, or when its
    plug-in fails to load (:func:`unknown_kind` says why).
    """
    cls = _REGISTRY.get(kind)
    if cls is not None:
        return cls
    builtin = _BUILTIN.get(kind)
    if builtin is not None:
        __import__(builtin.partition(":")[0])
        return _REGISTRY.get(kind)
    entry = _entry_points().get(kind)
    if entry is None or kind in _broken:
        return None
    return _load_plugin(kind, entry)


def _entry_points() -> dict[str, Any]:
    global _plugins
    if _plugins is None:
        from importlib.metadata import entry_points

        _plugins = {}
        for entry in entry_points(group=ENTRY_POINTS):
            _plugins.setdefault(entry.name, entry)  # the first one on sys.path wins
    return _plugins


def _load_plugin(kind: str, entry: Any) -> type[Resource[Any]] | None:
    where = f"{entry.value} (entry point '{kind}' in group '{ENTRY_POINTS}')"
    try:
        loaded = entry.load()
    except Exception as exc:
        _broken[kind] = f"importing {where} failed: {type(exc).__name__}: {exc}"
        return None
    cls = _REGISTRY.get(kind)
    if isinstance(loaded, type) and issubclass(loaded, Resource) and cls is not loaded:
        _broken[kind] = f"{where} is {loaded.__qualname__}, whose kind is not '{kind}'"
        return None
    if cls is None:
        _broken[kind] = f"{where} defines no Resource subclass with kind='{kind}'"
    return cls


def unknown_kind(kind: str, *, typo: bool = False) -> str:
    """What to tell a user about a kind :func:`get_kind` did not find: why its plug-in
    did not load, or how a plug-in kind is installed ("" when ``typo``: the caller found
    a close match, and the hint would be noise)."""
    why = _broken.get(kind)
    if why is not None:
        return f"its plug-in did not load: {why}"
    if typo:
        return ""
    return (
        "a kind from a plug-in needs its Python package installed where convergent runs "
        f"(it registers the kind in the entry-point group '{ENTRY_POINTS}')"
    )


def builtin_kinds() -> list[str]:
    """The kinds that ship with convergent, sorted."""
    return sorted(_BUILTIN)


def builtin_classes() -> dict[str, str]:
    """The classes of the built-in kinds: class name -> module (``{"File": "...file"}``)."""
    found: dict[str, str] = {}
    for value in _BUILTIN.values():
        module, _, name = value.partition(":")
        found[name] = module
    return found


def kinds() -> Iterator[str]:
    """Every known kind name, sorted: built-in, registered and those plug-ins offer."""
    for kind in _BUILTIN:
        get_kind(kind)
    yield from sorted({*_REGISTRY, *_entry_points()} - _broken.keys())
