"""Meta retry, delay, backoff, timeout and rewatch, as the engine applies them to every kind.

Every timing is asserted on the virtual clock (``tests.clock``): exact, and instant.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from convergent.engine import Blocked, Changed, Converged, Engine, Failed
from convergent.resources.base import Meta
from tests.clock import run_virtual
from tests.engine.probe import Box, Probe
from tests.engine.support import Recorder, graph_of, logs, run_engine_virtual


def test_retry_waits_delay_between_tries_and_then_succeeds() -> None:
    box = Box(fail_times=2)
    probe = Probe.make("p", box, meta=Meta(retry=3, delay=0.5))
    result, rec = run_engine_virtual(graph_of(probe))
    assert box.at("apply p") == [0.0, 0.5, 1.0]
    assert box.value == "ok"
    assert logs(rec, "probe[p]") == [
        "retry 1/3 in 0.5 s: cannot set p",
        "retry 2/3 in 0.5 s: cannot set p",
    ]
    assert not rec.of(Failed)
    assert result.converged and result.exit_code == 0


def test_retries_that_run_out_are_a_failure() -> None:
    box = Box(fail_apply=True)
    probe = Probe.make("p", box, meta=Meta(retry=2, delay=1))
    result, rec = run_engine_virtual(graph_of(probe))
    assert box.at("apply p") == [0.0, 1.0, 2.0]  # the first try and two retries
    (failed,) = rec.of(Failed)
    assert "probe[p]: cannot set p" in str(failed.error)  # type: ignore[union-attr]
    assert result.failed == 1 and result.exit_code == 1


def test_the_vertex_is_not_settled_while_it_retries() -> None:
    """Converged is reported once, after the retry succeeded, never during the delay."""
    box = Box(fail_times=1)
    probe = Probe.make("p", box, meta=Meta(retry=1, delay=10))
    _, rec = run_engine_virtual(graph_of(probe))
    kinds = [type(r).__name__ for r in rec.reports]
    assert kinds == ["Log", "Changed", "Converged"]


def test_exponential_backoff_doubles_the_delay_up_to_max_delay() -> None:
    box = Box(fail_times=6)
    meta = Meta(retry=-1, delay=1, backoff="exponential", max_delay=5)
    _, rec = run_engine_virtual(graph_of(Probe.make("p", box, meta=meta)))
    assert box.at("apply p") == [0, 1, 3, 7, 12, 17, 22]
    delays = [line.split(" in ")[1].split(" s:")[0] for line in logs(rec, "probe[p]")]
    assert delays == ["1", "2", "4", "5", "5", "5"]
    assert logs(rec, "probe[p]")[0] == "retry 1/forever in 1 s: cannot set p"


def test_jitter_spreads_each_delay_within_its_fraction() -> None:
    box = Box(fail_times=20)
    meta = Meta(retry=-1, delay=1, jitter=0.5)
    run_engine_virtual(graph_of(Probe.make("p", box, meta=meta)))
    times = box.at("apply p")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 20
    assert all(0.5 <= gap <= 1.5 for gap in gaps)
    assert len({round(gap, 9) for gap in gaps}) > 1  # spread, not one fixed delay


def test_a_success_resets_the_retry_counter() -> None:
    """With retry 1, a failure after a success gets its retry again: it is not permanent."""
    box = Box(fail_times=1)
    probe = Probe.make("p", box, meta=Meta(retry=1, delay=1))

    async def main() -> None:
        rec = Recorder()
        engine = Engine(graph_of(probe), reporter=rec)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        mark = len(rec.reports)
        box.value, box.fail_times = "drifted", 1
        assert box.ctx is not None
        box.ctx.event()
        await rec.wait_for(lambda r: isinstance(r, Converged), start=mark)
        assert logs(rec, "probe[p]") == ["retry 1/1 in 1 s: cannot set p"] * 2
        assert not rec.of(Failed) and box.value == "ok"
        engine.stop()
        await task

    run_virtual(main())


def test_a_run_stopped_while_a_resource_waits_to_retry_counts_it_and_fails() -> None:
    """SIGTERM (``stop()``) during a retry's delay: the summary says the resource was
    retrying (its last try failed), and the exit code is 1, not a clean 0."""
    box = Box(fail_apply=True)
    probe = Probe.make("p", box, meta=Meta(retry=5, delay=30))

    async def main() -> None:
        rec = Recorder()
        engine = Engine(graph_of(probe), reporter=rec)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: "retry 1/5 in 30 s" in getattr(r, "message", ""))
        engine.stop()
        result = await task
        assert result.interrupted and result.failed == 0 and result.retrying == 1
        assert result.exit_code == 1
        assert "failed: 0, retrying: 1," in result.summary()

    run_virtual(main())


def test_a_permanent_failure_blocks_dependents_until_it_succeeds() -> None:
    bad_box, down_box = Box(fail_apply=True), Box()
    bad = Probe.make("bad", bad_box, meta=Meta(retry=1, delay=2))
    down = Probe.make("down", down_box)

    async def main() -> None:
        rec = Recorder()
        engine = Engine(graph_of(bad, down, edges=(("bad", "down"),)), reporter=rec)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        assert [(r.resource, r.upstream) for r in rec.of(Blocked)] == [  # type: ignore[union-attr]
            ("probe[down]", "probe[bad]")
        ]
        assert "check down" not in down_box.journal
        assert engine.converged
        # A later event that leads to a success unblocks the dependents.
        bad_box.fail_apply = False
        assert bad_box.ctx is not None
        bad_box.ctx.event()
        mark = len(rec.reports)
        await rec.wait_for(
            lambda r: isinstance(r, Changed) and r.resource == "probe[down]", start=mark
        )
        await rec.wait_for(lambda r: isinstance(r, Converged) and not r.failed, start=mark)
        assert bad_box.value == down_box.value == "ok"
        engine.stop()
        result = await task
        assert result.failed == 0 and result.blocked == 0

    run_virtual(main())


def test_after_retries_ran_out_an_event_gets_one_try_not_a_new_series() -> None:
    box = Box(fail_apply=True)
    probe = Probe.make("p", box, meta=Meta(retry=1, delay=1))

    async def main() -> None:
        rec = Recorder()
        engine = Engine(graph_of(probe), reporter=rec)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        mark = len(rec.reports)
        assert box.ctx is not None
        box.ctx.event()
        await rec.wait_for(lambda r: isinstance(r, Converged), start=mark)
        assert len(box.at("apply p")) == 3  # try, retry, then the event's single try
        assert len(rec.of(Failed)) == 2 and len(logs(rec, "probe[p]")) == 1
        engine.stop()
        await task

    run_virtual(main())


def test_a_failed_watch_is_restarted_after_the_delay() -> None:
    box = Box(watch_failures=2)
    probe = Probe.make("p", box, meta=Meta(retry=2, delay=0.25))
    result, rec = run_engine_virtual(graph_of(probe))
    assert box.at("watch failed p") == [0.0, 0.25]
    assert box.at("ready p") == [0.5]
    assert box.at("check p") == [0.5]  # never checked before the watch is ready
    assert logs(rec, "probe[p]") == [
        "watch retry 1/2 in 0.25 s: Input/output error: /watched/p",
        "watch retry 2/2 in 0.25 s: Input/output error: /watched/p",
    ]
    assert result.exit_code == 0 and box.value == "ok"


def test_watch_failures_have_their_own_retry_counter() -> None:
    """One failed apply does not use up the retry the watch needs, nor the other way round."""
    box = Box(watch_failures=1, fail_times=1)
    probe = Probe.make("p", box, meta=Meta(retry=1, delay=1))
    result, rec = run_engine_virtual(graph_of(probe))
    messages = logs(rec, "probe[p]")
    assert [m.split(" in ")[0] for m in messages] == ["watch retry 1/1", "retry 1/1"]
    assert result.exit_code == 0 and box.value == "ok"


def test_a_watch_out_of_retries_fails_the_resource_and_blocks_dependents() -> None:
    box, down_box = Box(watch_failures=5), Box()
    probe = Probe.make("p", box, meta=Meta(retry=1, delay=1))
    result, rec = run_engine_virtual(
        graph_of(probe, Probe.make("down", down_box), edges=(("p", "down"),))
    )
    (failed,) = rec.of(Failed)
    assert "watch failed: Input/output error" in str(failed.error)  # type: ignore[union-attr]
    assert result.failed == 1 and result.blocked == 1
    assert "check p" not in box.journal and "check down" not in down_box.journal


def test_timeout_fails_a_try_that_takes_too_long_and_counts_as_a_try() -> None:
    box = Box(apply_seconds=10)
    probe = Probe.make("p", box, meta=Meta(timeout=2, retry=1, delay=1))
    result, rec = run_engine_virtual(graph_of(probe))
    assert box.at("apply p") == [0.0, 3.0]  # timed out at 2, retried 1 s later
    assert logs(rec, "probe[p]") == ["retry 1/1 in 1 s: timed out after 2 s"]
    (failed,) = rec.of(Failed)
    assert str(failed.error) == "probe[p]: timed out after 2 s"  # type: ignore[union-attr]
    assert box.value == "" and result.exit_code == 1


def test_a_try_within_its_timeout_is_not_affected() -> None:
    box = Box(apply_seconds=1.5)
    result, rec = run_engine_virtual(graph_of(Probe.make("p", box, meta=Meta(timeout=2))))
    assert result.exit_code == 0 and box.value == "ok" and not rec.of(Failed)


def test_rewatch_restarts_a_watch_that_failed_for_good() -> None:
    box = Box(watch_failures=1)
    probe = Probe.make("p", box, meta=Meta(rewatch=True))
    other_box = Box(watch_failures=1)
    other = Probe.make("other", other_box)  # rewatch: false (the default)

    async def main() -> None:
        rec = Recorder()
        engine = Engine(graph_of(probe, other), reporter=rec)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        assert len(rec.of(Failed)) == 2
        mark = len(rec.reports)
        assert engine.rewatch() == ["probe[p]"]
        done = await rec.wait_for(lambda r: isinstance(r, Converged), start=mark)
        assert done.failed == 1  # type: ignore[union-attr]
        assert box.value == "ok" and other_box.value == ""
        assert "restarting the watch that failed (rewatch)" in logs(rec, "probe[p]")
        engine.stop()
        await task

    run_virtual(main())


@pytest.mark.parametrize("retry", [0, 3])
def test_without_a_failure_retry_costs_nothing(retry: int) -> None:
    box = Box()
    result, rec = run_engine_virtual(graph_of(Probe.make("p", box, meta=Meta(retry=retry))))
    assert box.at("apply p") == [0.0] and logs(rec, "probe[p]") == []
    assert result.exit_code == 0
