"""Meta poll and limit/burst: when the engine checks, on the virtual clock (exact times)."""

from __future__ import annotations

import asyncio

import pytest

from convergent.engine import Engine
from convergent.resources.base import Meta
from tests.clock import run_virtual
from tests.engine.probe import Box, Probe
from tests.engine.support import Recorder, graph_of


def _run_for(probe: Probe, seconds: float, during: object = None) -> Recorder:
    """Run a one-probe graph for ``seconds`` of virtual time, calling ``during(box)`` first."""
    rec = Recorder()

    async def main() -> None:
        engine = Engine(graph_of(probe), reporter=rec)
        task = asyncio.create_task(engine.run())
        if callable(during):
            await during(probe.box)
        await asyncio.sleep(seconds - asyncio.get_running_loop().time())
        engine.stop()
        await asyncio.wait_for(task, 5)

    run_virtual(main())
    return rec


def test_poll_checks_every_n_seconds_without_watching() -> None:
    box = Box(value="ok")
    _run_for(Probe.make("p", box, meta=Meta(poll=2)), 7)
    assert not any(line.startswith("ready") for line in box.journal)  # watch never ran
    assert box.at("check p") == [0, 2, 4, 6]


def test_poll_repairs_drift_at_the_next_poll_without_an_event() -> None:
    box = Box()

    async def drift(box: Box) -> None:
        await asyncio.sleep(3)
        box.value = "drifted"  # no ctx.event(): nothing watches

    _run_for(Probe.make("p", box, meta=Meta(poll=2)), 5, drift)
    assert box.at("apply p") == [0, 4]
    assert box.value == "ok"


async def _poke_every(box: Box, start: float, step: float, count: int, drift: bool) -> None:
    """From ``start``, ``count`` events ``step`` seconds apart; with ``drift`` each one
    also changes the world to ``v1``, ``v2``... (only the last one is still true)."""
    await asyncio.sleep(start)
    for i in range(1, count + 1):
        if drift:
            box.value = f"v{i}"
        assert box.ctx is not None
        box.ctx.event()
        await asyncio.sleep(step)


def test_the_token_bucket_never_drops_the_last_event() -> None:
    """100 events in one second through a limit of 10 runs a second: the runs coalesce the
    events, and the last event's change is the one the last run saw and repaired."""
    box = Box()

    async def burst(box: Box) -> None:
        await _poke_every(box, 1, 0.01, 100, drift=True)

    _run_for(Probe.make("p", box, meta=Meta(limit=10, burst=1)), 5, burst)
    seen = [line for line in box.journal if line.startswith("saw ")]
    assert seen[-1] == "saw v100"
    assert box.value == "ok"
    assert 2 <= len(box.at("check p")) <= 14  # coalesced: far fewer runs than events


def test_limit_spaces_runs_one_token_interval_apart() -> None:
    box = Box(value="ok")

    async def pokes(box: Box) -> None:
        await _poke_every(box, 1, 0.1, 20, drift=False)  # events at 1.0, 1.1 ... 2.9

    _run_for(Probe.make("p", box, meta=Meta(limit=2, burst=1)), 10, pokes)
    assert box.at("check p") == pytest.approx([0, 1, 1.5, 2, 2.5, 3])


def test_burst_lets_that_many_runs_through_at_once() -> None:
    box = Box(value="ok")

    async def pokes(box: Box) -> None:
        await asyncio.sleep(10)  # the bucket is full again (3 tokens)
        assert box.ctx is not None
        for _ in range(5):
            box.ctx.event()
            await asyncio.sleep(0)  # let the worker run between events
            await asyncio.sleep(0)

    _run_for(Probe.make("p", box, meta=Meta(limit=1, burst=3)), 20, pokes)
    assert box.at("check p") == pytest.approx([0, 10, 10, 10, 11])


def test_without_a_limit_every_event_gets_its_run() -> None:
    """The control for the limit tests: the same events, no coalescing by time."""
    box = Box(value="ok")

    async def pokes(box: Box) -> None:
        await _poke_every(box, 1, 0.1, 20, drift=False)

    _run_for(Probe.make("p", box), 10, pokes)
    assert len(box.at("check p")) == 21
