"""The ``Subscribes`` ability: a kind that watches with a synchronous ``subscribe`` keeps
every guarantee of ``watch`` (ready before check, no missed event, cleanup, retries).

The probes here subscribe instead of running a watch coroutine; their unsubscribe is
journaled, so a test sees exactly when (and how often) the engine called it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from convergent.engine import Changed, Engine, Failed
from convergent.graph import Graph
from convergent.resources.base import Context, Meta, Resource
from tests.engine.probe import Box, Probe
from tests.engine.support import BOUND, Recorder, logs, run_engine_virtual


class Subscribed(Probe, kind="subscribed_probe"):
    """A probe whose watching is a subscription: ``box.ctx.event`` is its callback."""

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        box = self.box
        if box.watch_failures > 0:
            box.watch_failures -= 1
            box.note(f"subscribe failed {self.name}")
            raise OSError(5, "Input/output error", f"/watched/{self.name}")
        box.ctx = ctx
        box.note(f"ready {self.name}")
        ctx.ready()

        def unsubscribe() -> None:
            box.ctx = None
            box.note(f"unsubscribed {self.name}")

        return unsubscribe


class NeverReady(Probe, kind="never_ready_probe"):
    """Subscribes without calling ``ctx.ready()``: a broken kind."""

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        self.box.note(f"subscribed {self.name}")
        return lambda: self.box.note(f"unsubscribed {self.name}")


def _graph(*resources: Resource[Any]) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    for r in resources:
        g.add(r)
    return g


def test_subscribe_is_ready_before_check_and_unsubscribed_once_at_the_end() -> None:
    box = Box()
    result, _ = run_engine_virtual(_graph(Subscribed.make("s", box)))
    assert box.journal[:2] == ["ready s", "check s"]
    assert box.journal.count("unsubscribed s") == 1
    assert box.journal[-1] == "unsubscribed s"
    assert result.converged and box.value == "ok"


def test_an_event_from_the_subscription_is_checked_and_repaired() -> None:
    box = Box()
    rec = Recorder()

    async def main() -> None:
        engine = Engine(_graph(Subscribed.make("s", box)), reporter=rec)
        run = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Changed))
        box.value = "drifted"
        assert box.ctx is not None
        box.ctx.event()
        await rec.wait_for(lambda r: isinstance(r, Changed), start=len(rec.reports))
        engine.stop()
        await asyncio.wait_for(run, BOUND)

    asyncio.run(main())
    assert box.value == "ok"
    assert box.journal.count("apply s") == 2
    assert box.journal.count("unsubscribed s") == 1


def test_a_failing_subscribe_is_retried_like_a_failed_watch() -> None:
    box = Box(watch_failures=2)
    probe = Subscribed.make("s", box, meta=Meta(retry=2, delay=0.25))
    result, rec = run_engine_virtual(_graph(probe))
    assert box.at("subscribe failed s") == [0.0, 0.25]
    assert box.at("ready s") == [0.5]
    assert box.at("check s") == [0.5]  # never checked before the subscription is ready
    assert logs(rec, "subscribed_probe[s]") == [
        "watch retry 1/2 in 0.25 s: Input/output error: /watched/s",
        "watch retry 2/2 in 0.25 s: Input/output error: /watched/s",
    ]
    assert result.exit_code == 0 and box.value == "ok"


def test_a_subscribe_out_of_retries_fails_the_resource() -> None:
    box = Box(watch_failures=5)
    result, rec = run_engine_virtual(_graph(Subscribed.make("s", box, meta=Meta(retry=1))))
    (failed,) = rec.of(Failed)
    assert "watch failed: Input/output error" in str(failed.error)  # type: ignore[union-attr]
    assert result.failed == 1 and "check s" not in box.journal


def test_a_subscribe_that_never_calls_ready_is_a_watch_failure_and_is_undone() -> None:
    box = Box()
    result, rec = run_engine_virtual(_graph(NeverReady.make("n", box)))
    (failed,) = rec.of(Failed)
    assert "subscribe returned without calling ctx.ready()" in str(failed.error)  # type: ignore[union-attr]
    assert box.journal == ["subscribed n", "unsubscribed n"]
    assert result.failed == 1


def test_a_removed_resource_is_unsubscribed_at_the_changeover() -> None:
    gone, stays = Box(), Box()
    rec = Recorder()

    async def main() -> None:
        first = _graph(Subscribed.make("gone", gone), Subscribed.make("stays", stays))
        engine = Engine(first, reporter=rec)
        run = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Changed) and r.resource.endswith("[stays]"))
        await rec.wait_for(lambda r: isinstance(r, Changed) and r.resource.endswith("[gone]"))
        await asyncio.wait_for(engine.swap(_graph(Subscribed.make("stays", stays))), BOUND)
        assert gone.journal.count("unsubscribed gone") == 1
        assert "unsubscribed stays" not in stays.journal  # unchanged: its watch goes on
        engine.stop()
        await asyncio.wait_for(run, BOUND)

    asyncio.run(main())
    assert gone.journal.count("unsubscribed gone") == 1
    assert stays.journal.count("unsubscribed stays") == 1
