"""Engine invariants, each named after the guarantee it checks."""

from __future__ import annotations

import asyncio

from convergent.engine import (
    Blocked,
    Changed,
    Converged,
    Engine,
    Failed,
    MayChange,
    RunResult,
    WouldChange,
    run_graph,
)
from convergent.graph import Graph
from convergent.resources.base import Resource
from tests.engine.probe import Box, Probe
from tests.engine.support import BOUND, Recorder, graph_of


def run(graph: Graph[Resource[object]], **kwargs: object) -> tuple[RunResult, Recorder]:
    rec = Recorder()

    async def main() -> RunResult:
        return await asyncio.wait_for(run_graph(graph, reporter=rec, **kwargs), BOUND)  # type: ignore[arg-type]

    return asyncio.run(main()), rec


def test_upstream_converges_before_downstream_is_checked() -> None:
    box = Box()
    a, b, c = (Probe.make(n, box, want=n) for n in "abc")
    result, _ = run(graph_of(a, b, c, edges=(("a", "b"), ("b", "c"))), converged_timeout=0)
    assert result.converged and result.exit_code == 0
    checks = [line for line in box.journal if line.startswith(("check", "applied"))]
    # a is applied before b is first checked, b before c.
    assert checks.index("applied a") < checks.index("check b")
    assert checks.index("applied b") < checks.index("check c")


def test_independent_branches_run_at_the_same_time() -> None:
    """a's apply can only finish while b's apply is in progress: serial execution would
    time out, so passing proves the two branches overlapped."""
    box_a, box_b = Box(), Box()
    box_a.gate = box_b.entered  # a waits until b has entered its apply
    box_b.gate = box_a.entered  # and b until a has
    a, b = Probe.make("a", box_a), Probe.make("b", box_b)
    result, _ = run(graph_of(a, b), converged_timeout=0)
    assert result.exit_code == 0
    assert box_a.value == box_b.value == "ok"


def test_event_during_apply_is_not_lost() -> None:
    box = Box()
    box.gate = asyncio.Event()
    probe = Probe.make("p", box)

    async def main() -> None:
        rec = Recorder()
        engine = Engine(graph_of(probe), reporter=rec)
        task = asyncio.create_task(engine.run())
        await asyncio.wait_for(box.entered.wait(), BOUND)
        # The world drifts while apply is running; the event must cause another check.
        assert box.ctx is not None
        box.ctx.event()
        assert box.gate is not None
        box.gate.set()
        await rec.wait_for(lambda r: isinstance(r, Converged))
        checks_after_apply = box.journal[box.journal.index("applied p") :].count("check p")
        assert checks_after_apply >= 1
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())


def test_converged_is_not_reported_while_a_check_is_owed() -> None:
    """An event during apply (a file's own write makes one every time) owes a check: no
    Converged may be reported between the apply and that check, not even for a moment."""
    box = Box()
    box.gate = asyncio.Event()
    probe = Probe.make("p", box)
    seen: list[list[str]] = []  # the journal as it was at each Converged

    async def main() -> None:
        rec = Recorder()

        def reporter(report: object) -> None:
            if isinstance(report, Converged):
                seen.append(list(box.journal))
            rec(report)  # type: ignore[arg-type]

        engine = Engine(graph_of(probe), reporter=reporter)
        task = asyncio.create_task(engine.run())
        await asyncio.wait_for(box.entered.wait(), BOUND)
        assert box.ctx is not None and box.gate is not None
        box.ctx.event()
        box.gate.set()
        await rec.wait_for(lambda r: isinstance(r, Converged))
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert seen, "never converged"
    for journal in seen:
        assert "applied p" in journal
        assert journal[journal.index("applied p") :].count("saw ok") >= 1, journal


def test_failed_pass_with_an_event_is_tried_again_before_converged() -> None:
    """Out of retries, but an event came during the failed apply: one more try is owed
    before the graph may count as converged."""
    box = Box()
    box.gate = asyncio.Event()
    box.fail_times = 1
    probe = Probe.make("p", box)
    seen: list[list[str]] = []

    async def main() -> None:
        rec = Recorder()

        def reporter(report: object) -> None:
            if isinstance(report, Converged):
                seen.append(list(box.journal))
            rec(report)  # type: ignore[arg-type]

        engine = Engine(graph_of(probe), reporter=reporter)
        task = asyncio.create_task(engine.run())
        await asyncio.wait_for(box.entered.wait(), BOUND)
        assert box.ctx is not None and box.gate is not None
        box.ctx.event()
        box.gate.set()
        await rec.wait_for(lambda r: isinstance(r, Converged))
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert seen and seen[0].count("apply p") == 2, seen
    assert box.value == "ok"


def test_drift_is_repaired_after_an_event() -> None:
    box = Box()
    probe = Probe.make("p", box)

    async def main() -> None:
        rec = Recorder()
        engine = Engine(graph_of(probe), reporter=rec)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        mark = len(rec.reports)
        box.value = "drifted"
        assert box.ctx is not None
        box.ctx.event()
        report = await rec.wait_for(lambda r: isinstance(r, Changed), start=mark)
        assert isinstance(report, Changed) and "'drifted' -> 'ok'" in report.summary
        assert box.value == "ok"
        engine.stop()
        result = await asyncio.wait_for(task, BOUND)
        assert result.interrupted and result.changed == 1

    asyncio.run(main())


def test_a_change_upstream_makes_dependents_check_again() -> None:
    box_up, box_down = Box(), Box()
    up, down = Probe.make("up", box_up), Probe.make("down", box_down)

    async def main() -> None:
        rec = Recorder()
        engine = Engine(graph_of(up, down, edges=(("up", "down"),)), reporter=rec)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        before = box_down.journal.count("check down")
        box_up.value = "drifted"
        assert box_up.ctx is not None
        box_up.ctx.event()
        mark = len(rec.reports)
        await rec.wait_for(lambda r: isinstance(r, Converged), start=mark)
        assert box_down.journal.count("check down") == before + 1
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())


def test_noop_never_applies_and_reports_what_would_change() -> None:
    box = Box(value="old")
    a, b = Probe.make("a", box, want="new"), Probe.make("b", Box(), want="x")
    result, rec = run(graph_of(a, b, edges=(("a", "b"),)), noop=True, converged_timeout=0)
    assert box.value == "old"
    assert not any(line.startswith("apply") for line in box.journal)
    would = {r.resource: r for r in rec.of(WouldChange)}
    may = {r.resource: r for r in rec.of(MayChange)}  # probe predicts nothing: b may change
    assert set(would) == {"probe[a]"} and set(may) == {"probe[b]"}
    assert may["probe[b]"].summary == "may change: '' -> 'x'"
    assert result.changed == 0 and result.exit_code == 0


def test_meta_noop_applies_to_that_resource_only() -> None:
    from convergent.resources.base import Meta

    quiet_box, loud_box = Box(), Box()
    quiet = Probe("quiet", meta=Meta(noop=True))
    quiet.box = quiet_box
    loud = Probe.make("loud", loud_box)
    result, _ = run(graph_of(quiet, loud), converged_timeout=0)
    assert quiet_box.value == "" and loud_box.value == "ok"
    assert result.changed == 1


def test_failed_resource_blocks_its_dependents_and_exits_non_zero() -> None:
    bad_box, down_box, side_box = Box(fail_apply=True), Box(), Box()
    bad, down, after = (
        Probe.make("bad", bad_box),
        Probe.make("down", down_box),
        Probe.make("after", down_box),
    )
    side = Probe.make("side", side_box)
    result, rec = run(
        graph_of(bad, down, after, side, edges=(("bad", "down"), ("down", "after"))),
        converged_timeout=0,
    )
    assert result.exit_code == 1 and result.failed == 1 and result.blocked == 2
    failed = rec.of(Failed)
    assert len(failed) == 1 and "probe[bad]: cannot set bad" in str(failed[0].error)  # type: ignore[union-attr]
    blocked = {r.resource: r.upstream for r in rec.of(Blocked)}  # type: ignore[union-attr]
    assert blocked == {"probe[down]": "probe[bad]", "probe[after]": "probe[bad]"}
    assert "check down" not in down_box.journal
    assert side_box.value == "ok"


def test_converged_timeout_zero_returns_converged_with_exit_code_zero() -> None:
    result, rec = run(graph_of(Probe.make("p", Box())), converged_timeout=0)
    assert result.converged and not result.interrupted and result.exit_code == 0
    assert len(rec.of(Converged)) == 1


def test_converged_timeout_waits_while_still_converged_then_returns() -> None:
    result, _ = run(graph_of(Probe.make("p", Box())), converged_timeout=0.05)
    assert result.converged and result.exit_code == 0


def test_notify_edge_delivers_a_refresh_after_a_change() -> None:
    up_box, down_box = Box(), Box(value="ok")
    up, down = Probe.make("up", up_box), Probe.make("down", down_box)
    g = graph_of(up, down)
    g.add_edge("probe[up]", "probe[down]", notify=True)
    run(g, converged_timeout=0)
    assert "refresh down from probe[up]" in down_box.journal


def test_no_refresh_without_a_change_upstream() -> None:
    up_box, down_box = Box(value="ok"), Box(value="ok")
    g = graph_of(Probe.make("up", up_box), Probe.make("down", down_box))
    g.add_edge("probe[up]", "probe[down]", notify=True)
    run(g, converged_timeout=0)
    assert not any(line.startswith("refresh") for line in down_box.journal)


def test_noop_run_never_refreshes() -> None:
    up_box, down_box = Box(), Box(value="ok")
    g = graph_of(Probe.make("up", up_box), Probe.make("down", down_box))
    g.add_edge("probe[up]", "probe[down]", notify=True)
    _, rec = run(g, noop=True, converged_timeout=0)
    assert not any(line.startswith("refresh") for line in down_box.journal)
    would = [r for r in rec.of(WouldChange) if r.resource == "probe[up]"]  # type: ignore[union-attr]
    assert would and would[0].refreshes == ("probe[down]",)  # type: ignore[union-attr]


def test_check_never_runs_before_watch_is_ready() -> None:
    class Late(Probe):
        async def watch(self, ctx):  # type: ignore[no-untyped-def]
            self.box.ctx = ctx
            await asyncio.sleep(0)  # yield so the worker gets a chance to run too early
            self.box.journal.append("ready late")
            ctx.ready()
            await asyncio.Event().wait()

    box = Box()
    late = Late("late")
    late.box = box
    run(graph_of(late), converged_timeout=0)
    assert box.journal.index("ready late") < box.journal.index("check late")


def test_watch_failure_is_reported_as_a_failed_resource() -> None:
    class Broken(Probe):
        async def watch(self, ctx):  # type: ignore[no-untyped-def]
            raise OSError(28, "No space left on device", "/watched")

    broken = Broken("broken")
    broken.box = Box()
    result, rec = run(graph_of(broken), converged_timeout=0)
    assert result.exit_code == 1
    (failed,) = rec.of(Failed)
    assert "probe[broken]: watch failed: No space left on device: /watched" in str(failed.error)  # type: ignore[union-attr]


def test_stop_ends_a_run_without_converged_timeout() -> None:
    async def main() -> RunResult:
        rec = Recorder()
        engine = Engine(graph_of(Probe.make("p", Box())), reporter=rec)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        engine.stop()
        return await asyncio.wait_for(task, BOUND)

    result = asyncio.run(main())
    assert result.interrupted and result.exit_code == 0
