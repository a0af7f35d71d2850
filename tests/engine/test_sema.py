"""Semaphores: ``meta.sema`` and the engine-wide ``sema=N`` (``--sema N``), on the virtual clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convergent.engine import Engine
from convergent.errors import GraphError
from convergent.graph import Graph
from convergent.resources.base import Meta, Resource
from tests.e2e.agent import convergent
from tests.engine.probe import Box, Gauge, Probe
from tests.engine.support import graph_of, run_engine_virtual


def _slow(name: str, gauges: list[Gauge], sema: list[str] | None = None) -> Probe:
    """A probe whose apply takes 1 s and is counted by ``gauges``."""
    box = Box(apply_seconds=1, gauges=gauges)
    return Probe.make(name, box, meta=Meta(sema=sema or []))


def test_sema_on_three_resources_runs_them_one_at_a_time() -> None:
    gauge = Gauge()
    probes = [_slow(n, [gauge], ["x"]) for n in "abc"]
    result, _ = run_engine_virtual(graph_of(*probes))
    assert gauge.peak == 1
    assert sorted(p.box.at("apply " + p.name)[0] for p in probes) == [0, 1, 2]
    assert result.exit_code == 0


def test_without_sema_the_same_resources_run_together() -> None:
    """The control of the test above: the three applies overlap when nothing limits them."""
    gauge = Gauge()
    run_engine_virtual(graph_of(*(_slow(n, [gauge]) for n in "abc")))
    assert gauge.peak == 3


def test_a_semaphore_of_size_n_lets_n_run_at_once() -> None:
    gauge = Gauge()
    probes = [_slow(n, [gauge], ["x:2"]) for n in "abcde"]
    run_engine_virtual(graph_of(*probes))
    assert gauge.peak == 2
    assert sorted(p.box.at("apply " + p.name)[0] for p in probes) == [0, 0, 1, 1, 2]


def test_engine_sema_1_serialises_a_whole_graph() -> None:
    gauge = Gauge()
    probes = [_slow(n, [gauge]) for n in "abcdef"]
    result, _ = run_engine_virtual(graph_of(*probes), sema=1)
    assert gauge.peak == 1
    assert sorted(p.box.at("apply " + p.name)[0] for p in probes) == [0, 1, 2, 3, 4, 5]
    assert result.exit_code == 0


def test_engine_sema_n_and_meta_sema_both_hold() -> None:
    every, xs = Gauge(), Gauge()
    probes = [_slow(n, [every, xs], ["x"]) for n in "ab"] + [_slow(n, [every]) for n in "cde"]
    run_engine_virtual(graph_of(*probes), sema=2)
    assert every.peak == 2 and xs.peak == 1


def test_one_semaphore_with_two_sizes_is_an_error_naming_both_resources() -> None:
    a = Probe.make("a", Box(), meta=Meta(sema=["db:2"]))
    b = Probe.make("b", Box(), meta=Meta(sema=["db"]))
    with pytest.raises(GraphError) as info:
        Engine(graph_of(a, b))
    assert str(info.value) == (
        "semaphore 'db' has size 1 in probe[b] but 2 in probe[a]; give it the same size everywhere"
    )


def test_engine_sema_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="sema: a semaphore of size 0 would never let"):
        Engine(graph_of(Probe.make("a", Box())), sema=0)


_IDS = ("a", "b", "c")


@st.composite
def _graphs(draw: st.DrawFn) -> tuple[Graph[Resource[object]], dict[str, tuple[int, Gauge]], int]:
    """A random DAG of slow probes, each holding a random subset of semaphores with sizes."""
    sizes = {sema_id: draw(st.integers(1, 3)) for sema_id in _IDS}
    gauges = {sema_id: (size, Gauge()) for sema_id, size in sizes.items()}
    count = draw(st.integers(1, 10))
    graph: Graph[Resource[object]] = Graph()
    total = 0
    for i in range(count):
        held = draw(st.lists(st.sampled_from(_IDS), unique=True, min_size=1, max_size=len(_IDS)))
        seconds = draw(st.sampled_from((0.0, 0.5, 1.0, 1.0)))
        total += 1 + int(seconds)
        box = Box(apply_seconds=seconds, gauges=[gauges[h][1] for h in held])
        # "id:N" and plain "id" (size 1) are both written, in the order drawn.
        sema = [h if sizes[h] == 1 and draw(st.booleans()) else f"{h}:{sizes[h]}" for h in held]
        graph.add(Probe.make(f"p{i}", box, meta=Meta(sema=sema)))  # type: ignore[arg-type]
        for j in range(i):
            if draw(st.integers(0, 5)) == 0:  # sparse: more resources contend at once
                graph.add_edge(f"probe[p{j}]", f"probe[p{i}]", notify=draw(st.booleans()))
    return graph, gauges, total


@settings(max_examples=300, deadline=None, database=None)
@given(_graphs(), st.sampled_from((None, 1, 2)))
def test_random_graphs_with_random_semaphores_always_converge(
    drawn: tuple[Graph[Resource[object]], dict[str, tuple[int, Gauge]], int], sema: int | None
) -> None:
    """No deadlock: every graph converges within the time its applies take one after the
    other (plus slack), and no semaphore ever lets more than its size through."""
    graph, gauges, total = drawn
    result, _ = run_engine_virtual(graph, bound=total + 10, sema=sema)  # type: ignore[arg-type]
    assert result.converged and result.exit_code == 0
    for size, gauge in gauges.values():
        assert gauge.peak <= size


def test_convergent_run_sema_1_runs_one_resource_at_a_time(tmp_path: Path) -> None:
    """Three commands that each fail if another one holds the lock directory at the same time."""
    lock = tmp_path / "lock"
    step = f"mkdir {lock} || exit 1; sleep 0.05; rmdir {lock}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n"
        + "".join(f"  - exec: {name}\n    cmd: '{step}'\n    shell: true\n" for name in "abc"),
        encoding="utf-8",
    )
    done = convergent(
        "run",
        str(policy),
        "--sema",
        "1",
        "--converged-timeout",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": ran (") == 3


def test_convergent_run_rejects_sema_0(tmp_path: Path) -> None:
    done = convergent("run", str(tmp_path / "policy.yaml"), "--sema", "0")
    assert done.returncode == 2
    assert "--sema: '0': give 1 or more (1: one at a time)" in done.stderr
