"""A first pass that ends at once (``engine/firstpass.py``): a resource whose kind tells
at once that it is right (``ChecksNow``) ends its first pass where the first passes are
started, recorded and counted as a pass in a task would be; anything else (not right, a
pass that may wait or needs its task) runs its pass in a task as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from convergent.engine import Changed, RunResult
from convergent.engine.events import Event, EventLog
from convergent.engine.pool import BATCH
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Meta, Resource
from tests.engine.probe import Box, Probe
from tests.engine.support import Recorder, graph_of, run_engine_virtual


class Quick(Probe, kind="quick_probe"):
    """Subscribes (as ``file`` does) and tells at once whether its box is right; the
    journal says what was asked and in which task."""

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        self.box.note(f"ready {self.name}")
        ctx.ready()
        return lambda: None

    def check_now(self, ctx: Context) -> bool:
        task = asyncio.current_task()
        self.box.note(f"check_now {self.name} in {task.get_name() if task else None}")
        return self.box.value == self.params.want


class Finder(Quick, kind="finder_probe"):
    """Tells at once what is wrong: the change, not only False."""

    def check_now(self, ctx: Context) -> bool | Change:
        self.box.note(f"check_now {self.name}")
        if self.box.value == self.params.want:
            return True
        return Change(f"{self.box.value!r} -> {self.params.want!r}")


def _graph(resources: list[Resource[Any]], edges: tuple[tuple[str, str], ...] = ()) -> Graph[Any]:
    return graph_of(*resources, edges=edges, kind="quick_probe")


def _run(graph: Graph[Any], **kwargs: Any) -> tuple[RunResult, Recorder, list[Event]]:
    events: list[Event] = []
    result, rec = run_engine_virtual(graph, events=EventLog("h", [events.append]), **kwargs)
    return result, rec, events


def test_resources_right_at_once_end_their_first_pass_without_a_task_and_are_kept() -> None:
    box = Box(value="ok")
    n = 2 * BATCH + 3
    result, rec, events = _run(_graph([Quick.make(f"p{i}", box) for i in range(n)]))
    assert result.converged and result.changed == 0 and result.resources == n
    asked = [line for line in box.journal if line.startswith("check_now ")]
    assert asked == [f"check_now p{i} in first passes" for i in range(n)]
    assert not [line for line in box.journal if line.startswith("check ")]  # no second check
    assert [(e.resource, e.outcome, e.cause) for e in events] == [
        (f"quick_probe[p{i}]", "kept", "start-up") for i in range(n)
    ]
    assert all(e.seconds >= 0 for e in events)
    assert not rec.of(Changed)


def test_a_change_told_at_once_is_applied_by_the_pass_in_its_task_without_a_second_check() -> None:
    right, wrong = Box(value="ok"), Box(value="bad")
    result, rec, _ = _run(_graph([Finder.make("a", right), Finder.make("b", wrong)]))
    assert result.converged and result.changed == 1
    assert wrong.value == "ok"
    assert wrong.journal[1:4] == ["check_now b", "apply b", "applied b"]
    assert "check b" not in wrong.journal  # what check_now found is not looked for again
    assert [r.summary for r in rec.of(Changed)] == ["'bad' -> 'ok'"]


class DriftAfterNow(Quick, kind="drift_after_now_probe"):
    """Tells the change at once, and the state drifts right after, before the pass."""

    def check_now(self, ctx: Context) -> bool | Change:
        self.box.note(f"check_now {self.name} saw {self.box.value}")
        if self.box.value == self.params.want:
            return True

        def drift() -> None:
            self.box.value = "other"
            self.box.note("drift")
            ctx.event()

        asyncio.get_running_loop().call_soon(drift)
        return Change(f"{self.box.value!r} -> {self.params.want!r}")


def test_an_event_after_check_now_makes_the_pass_check_again() -> None:
    box = Box(value="bad")
    result, _, _ = _run(_graph([DriftAfterNow.make("b", box)]))
    assert result.converged and box.value == "ok"
    after = box.journal[box.journal.index("drift") :]
    assert after[:3] == ["drift", "check b", "saw other"], box.journal


def test_every_resource_watches_before_any_is_told_right() -> None:
    box = Box(value="ok")
    _run(_graph([Quick.make(f"p{i}", box) for i in range(BATCH + 7)]))
    last_ready = max(i for i, line in enumerate(box.journal) if line.startswith("ready "))
    first_asked = min(i for i, line in enumerate(box.journal) if line.startswith("check_now "))
    assert last_ready < first_asked


def test_a_resource_not_right_is_checked_and_changed_in_its_own_task() -> None:
    right, wrong = Box(value="ok"), Box(value="bad")
    result, rec, events = _run(_graph([Quick.make("a", right), Quick.make("b", wrong)]))
    assert result.converged and result.changed == 1
    assert wrong.value == "ok"
    assert wrong.journal[1:] == ["check_now b in first passes", "check b", "saw bad", "apply b",
                                 "applied b"]  # fmt: skip
    assert [(e.resource, e.outcome) for e in events] == [
        ("quick_probe[a]", "kept"),
        ("quick_probe[b]", "repaired"),
    ]
    assert [r.resource for r in rec.of(Changed)] == ["quick_probe[b]"]


def test_a_pass_that_may_wait_or_needs_its_task_is_not_ended_at_once() -> None:
    """timeout (it cancels the task the pass runs in), sema, limit: each runs its pass in
    a task, checked by ``check``; so does every pass of a --noop run."""
    metas = {
        "timeout": Meta(timeout=5.0),
        "sema": Meta(sema=["one"]),
        "limit": Meta(limit=10.0, burst=1),
    }
    boxes = {name: Box(value="ok") for name in metas}
    graph = _graph([Quick.make(name, boxes[name], meta=meta) for name, meta in metas.items()])
    result, _, events = _run(graph)
    assert result.converged
    for name, box in boxes.items():
        assert not [line for line in box.journal if line.startswith("check_now")], name
        assert f"check {name}" in box.journal, name
    assert {e.outcome for e in events} == {"kept"}
    noop_box = Box(value="ok")
    result, _, _ = _run(_graph([Quick.make("n", noop_box)]), noop=True)
    assert result.converged
    assert "check n" in noop_box.journal
    assert not [line for line in noop_box.journal if line.startswith("check_now")]


def test_a_downstream_waits_for_its_upstream_and_is_told_right_after_it() -> None:
    """An upstream that is right lets its downstream end at once; one that needs a change
    makes it wait, and the downstream is checked (in a task) once the upstream is clean."""
    box = Box(value="ok")
    result, _, events = _run(
        _graph([Quick.make("up", box), Quick.make("down", box)], edges=(("up", "down"),))
    )
    assert result.converged
    assert [line for line in box.journal if line.startswith("check")] == [
        "check_now up in first passes",
        "check_now down in first passes",
    ]
    up_box, down_box = Box(value="bad"), Box(value="ok")
    result, _, events = _run(
        _graph([Quick.make("up", up_box), Quick.make("down", down_box)], edges=(("up", "down"),))
    )
    assert result.converged and up_box.value == "ok"
    assert "check_now down in first passes" not in down_box.journal
    assert "check down" in down_box.journal
    assert [(e.resource, e.outcome) for e in events] == [
        ("quick_probe[up]", "repaired"),
        ("quick_probe[down]", "kept"),
    ]
