"""The part of a worker's state that most workers never change from its default.

A worker of a converged file never receives a value, never retries, is never blocked,
has no semaphore and no rate limit; eleven slots of ``None``, ``0`` and ``()`` cost it
88 bytes (8 MiB at 100,000 resources). :class:`RareFields` keeps them in one object
made on the first write of a value other than the default (a receiver, a failure, a
semaphore...), and reads the default while there is none. ``Worker`` inherits it; its
readers and writers (``engine/receive.py``, ``watching.py``, ``exchange.py``,
``predict.py``) see plain attributes as before.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convergent.engine.meta import TokenBucket
    from convergent.engine.receive import Waiting
    from convergent.resources.recv import Binding

__all__ = ["RareFields"]

_NO_VALUES: dict[str, Any] = {}  # received/tried before any: replaced, never written


class _Rare:
    __slots__ = (
        "blocked_by",
        "bucket",
        "found",
        "put",
        "received",
        "recv",
        "semaphores",
        "tried",
        "tries",
        "waiting",
        "watch_failed",
        "watch_tries",
    )

    def __init__(self) -> None:
        self.recv: tuple[Binding, ...] = ()
        self.received: dict[str, Any] = _NO_VALUES
        self.put: dict[str, Any] | None = None
        self.tried: dict[str, Any] = _NO_VALUES
        self.waiting: Waiting | None = None
        self.semaphores: tuple[asyncio.Semaphore, ...] = ()
        self.bucket: TokenBucket | None = None
        self.blocked_by: str | None = None
        self.tries = 0
        self.watch_tries = 0
        self.watch_failed = False
        self.found: Any = None


class RareFields:
    """``recv`` (what it receives, by parameter), ``received`` (values received at its
    last good pass), ``put`` (values now in ``resource.params``, valid), ``tried`` (values
    it last tried to receive, some missing), ``waiting`` (for a world value),
    ``semaphores`` (sorted by id: acquired in this order), ``bucket`` (``meta.limit``),
    ``blocked_by``, ``tries`` (failed check/apply tries since the last success),
    ``watch_tries`` (failed watches since the watch last proved itself),
    ``watch_failed`` (the watch failed and is out of retries)."""

    __slots__ = ("_rare",)

    def __init__(self) -> None:
        self._rare: _Rare | None = None

    def _more(self) -> _Rare:
        rare = self._rare
        if rare is None:
            rare = self._rare = _Rare()
        return rare

    @property
    def recv(self) -> tuple[Binding, ...]:
        rare = self._rare
        return () if rare is None else rare.recv

    @recv.setter
    def recv(self, value: tuple[Binding, ...]) -> None:
        if value or self._rare is not None:
            self._more().recv = value

    @property
    def received(self) -> dict[str, Any]:
        rare = self._rare
        return _NO_VALUES if rare is None else rare.received

    @received.setter
    def received(self, value: dict[str, Any]) -> None:
        self._more().received = value

    @property
    def put(self) -> dict[str, Any] | None:
        rare = self._rare
        return None if rare is None else rare.put

    @put.setter
    def put(self, value: dict[str, Any] | None) -> None:
        if value is not None or self._rare is not None:
            self._more().put = value

    @property
    def tried(self) -> dict[str, Any]:
        rare = self._rare
        return _NO_VALUES if rare is None else rare.tried

    @tried.setter
    def tried(self, value: dict[str, Any]) -> None:
        self._more().tried = value

    @property
    def waiting(self) -> Waiting | None:
        rare = self._rare
        return None if rare is None else rare.waiting

    @waiting.setter
    def waiting(self, value: Waiting | None) -> None:
        if value is not None or self._rare is not None:
            self._more().waiting = value

    @property
    def semaphores(self) -> tuple[asyncio.Semaphore, ...]:
        rare = self._rare
        return () if rare is None else rare.semaphores

    @semaphores.setter
    def semaphores(self, value: tuple[asyncio.Semaphore, ...]) -> None:
        if value or self._rare is not None:
            self._more().semaphores = value

    @property
    def bucket(self) -> TokenBucket | None:
        rare = self._rare
        return None if rare is None else rare.bucket

    @bucket.setter
    def bucket(self, value: TokenBucket | None) -> None:
        if value is not None or self._rare is not None:
            self._more().bucket = value

    @property
    def found(self) -> Any:
        """The change a first pass's ``check_now`` found (``engine/firstpass.py``): the
        pass that follows in the worker's task takes it instead of checking again."""
        rare = self._rare
        return None if rare is None else rare.found

    @found.setter
    def found(self, value: Any) -> None:
        if value is not None or self._rare is not None:
            self._more().found = value

    @property
    def blocked_by(self) -> str | None:
        rare = self._rare
        return None if rare is None else rare.blocked_by

    @blocked_by.setter
    def blocked_by(self, value: str | None) -> None:
        if value is not None or self._rare is not None:
            self._more().blocked_by = value

    @property
    def tries(self) -> int:
        rare = self._rare
        return 0 if rare is None else rare.tries

    @tries.setter
    def tries(self, value: int) -> None:
        if value or self._rare is not None:
            self._more().tries = value

    @property
    def watch_tries(self) -> int:
        rare = self._rare
        return 0 if rare is None else rare.watch_tries

    @watch_tries.setter
    def watch_tries(self, value: int) -> None:
        if value or self._rare is not None:
            self._more().watch_tries = value

    @property
    def watch_failed(self) -> bool:
        rare = self._rare
        return False if rare is None else rare.watch_failed

    @watch_failed.setter
    def watch_failed(self, value: bool) -> None:
        if value or self._rare is not None:
            self._more().watch_failed = value
