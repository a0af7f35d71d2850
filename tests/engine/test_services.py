"""Shared services (``ctx.shared``) are closed at the end of a run: ``aclose()`` is awaited
when a service has one (a D-Bus connection, an etcd client), else ``close()`` is called."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from convergent.engine import Engine, runner
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Params, Resource
from tests.engine.support import BOUND

JOURNAL: list[str] = []


class AsyncService:
    """Closes asynchronously: the close is only done once its coroutine ran to the end."""

    def __init__(self) -> None:
        JOURNAL.append("async made")

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        JOURNAL.append("async closed")

    def close(self) -> None:  # never called when aclose exists
        JOURNAL.append("async close() called")


class SyncService:
    def __init__(self) -> None:
        JOURNAL.append("sync made")

    def close(self) -> None:
        JOURNAL.append("sync closed")


class BrokenService:
    async def aclose(self) -> None:
        JOURNAL.append("broken closing")
        raise OSError("connection reset")


class HangingService:
    async def aclose(self) -> None:
        JOURNAL.append("hanging closing")
        await asyncio.Event().wait()


class UserParams(Params):
    """Parameters of ``serviceuser``.

    which: the services to use
    """

    which: list[str] = []


_FACTORIES: dict[str, Any] = {
    "async": AsyncService,
    "sync": SyncService,
    "broken": BrokenService,
    "hanging": HangingService,
}


class User(Resource[UserParams], kind="serviceuser"):
    async def check(self, ctx: Context) -> Change | None:
        for name in self.params.which:
            ctx.shared(_FACTORIES[name])
        return None


def _run(*which: str) -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(User("u", which=list(which)))
    g.add(User("v", which=list(which)))  # the same services: one instance each

    async def main() -> None:
        await asyncio.wait_for(Engine(g, converged_timeout=0).run(), BOUND * 3)

    asyncio.run(main())


def test_a_service_with_aclose_is_awaited_at_the_end_of_the_run() -> None:
    JOURNAL.clear()
    _run("async", "sync")
    assert JOURNAL == ["async made", "sync made", "async closed", "sync closed"]


def test_a_service_that_fails_or_hangs_in_aclose_does_not_stop_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hanging one is bounded (CLOSE_TIMEOUT), the broken one's error swallowed."""
    monkeypatch.setattr(runner, "CLOSE_TIMEOUT", 0.1)
    JOURNAL.clear()
    _run("broken", "hanging", "sync")
    assert JOURNAL == ["sync made", "broken closing", "hanging closing", "sync closed"]
