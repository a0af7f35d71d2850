"""Send/recv through the real engine: an output of one resource is a parameter of another,
the receiver knows which received values changed, and a changed output re-checks it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from convergent.engine import Changed, Converged, Engine, Failed, Log
from convergent.errors import GraphError, ParamError
from convergent.graph import Graph
from convergent.resources.abilities import Output
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.exec import Exec
from convergent.resources.file import File
from tests.engine.probe import Box, Probe
from tests.engine.support import BOUND, Recorder


@dataclass
class Source:
    """What an emitter sends; the test changes it and calls ``ctx.event()``."""

    value: str | None = "hello"
    ctx: Context | None = None
    passes: int = 0


class EmitterParams(Params, frozen=True):
    """Parameters of ``emitter``, a sending kind for these tests."""


class Emitter(Resource[EmitterParams], kind="emitter"):
    """Sends ``value`` (str) and ``count`` (int) from a Source the test owns."""

    sends: ClassVar[Mapping[str, Output]] = {"value": Output(str), "count": Output(int)}
    source: Source

    async def watch(self, ctx: Context) -> None:
        self.source.ctx = ctx
        ctx.ready()
        await asyncio.Event().wait()

    async def check(self, ctx: Context) -> Change | None:
        self.source.passes += 1
        return None

    def outputs(self) -> Mapping[str, Any]:
        value = self.source.value
        return {} if value is None else {"value": value, "count": len(value)}


@dataclass
class Seen:
    changed: list[frozenset[str]] = field(default_factory=list)


class Taker(Probe, kind="taker"):
    """A probe that notes what ``ctx.received_changed`` said at each check."""

    seen: Seen

    async def check(self, ctx: Context) -> Change | None:
        self.seen.changed.append(ctx.received_changed)
        return await super().check(ctx)


def _emitter(source: Source) -> Emitter:
    emitter = Emitter("e")
    emitter.source = source
    return emitter


def _taker(box: Box, seen: Seen) -> Taker:
    taker = Taker("t", want="placeholder")
    taker.box = box
    taker.seen = seen
    return taker


def _graph(source: Source, box: Box, seen: Seen) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    g.add(_emitter(source))
    g.add(_taker(box, seen), recv={"want": "emitter[e].value"})
    return g


async def _until(rec: Recorder, start: int, kind: type) -> int:
    await rec.wait_for(lambda r: isinstance(r, kind), start)
    return len(rec.reports)


def test_the_received_value_replaces_the_declared_parameter() -> None:
    source, box, seen = Source(), Box(), Seen()
    rec = Recorder()

    async def main() -> None:
        engine = Engine(_graph(source, box, seen), reporter=rec, converged_timeout=0)
        await asyncio.wait_for(engine.run(), BOUND)

    asyncio.run(main())
    assert box.value == "hello"
    assert seen.changed == [frozenset({"want"})]
    assert any(isinstance(r, Changed) and r.resource == "taker[t]" for r in rec.reports)


def test_a_changed_output_checks_the_receiver_again_and_says_what_changed() -> None:
    source, box, seen = Source(), Box(), Seen()
    rec = Recorder()

    async def main() -> None:
        engine = Engine(_graph(source, box, seen), reporter=rec)
        task = asyncio.create_task(engine.run())
        mark = await _until(rec, 0, Converged)
        assert box.value == "hello"
        source.value = "world"
        assert source.ctx is not None
        source.ctx.event()
        await rec.wait_for(lambda r: isinstance(r, Changed) and r.resource == "taker[t]", mark)
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert box.value == "world"
    assert seen.changed == [frozenset({"want"}), frozenset({"want"})]


def test_an_unchanged_output_does_not_check_the_receiver_again() -> None:
    source, box, seen = Source(), Box(), Seen()
    rec = Recorder()

    async def main() -> None:
        engine = Engine(_graph(source, box, seen), reporter=rec)
        task = asyncio.create_task(engine.run())
        mark = await _until(rec, 0, Converged)
        passes = source.passes
        assert source.ctx is not None
        source.ctx.event()  # the emitter is checked again; its output stays "hello"
        await _until(rec, mark, Converged)
        assert source.passes == passes + 1
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert len(seen.changed) == 1


def test_received_changed_is_empty_when_the_receiver_is_checked_for_another_reason() -> None:
    source, box, seen = Source(), Box(), Seen()
    rec = Recorder()

    async def main() -> None:
        engine = Engine(_graph(source, box, seen), reporter=rec)
        task = asyncio.create_task(engine.run())
        mark = await _until(rec, 0, Converged)
        box.value = "drifted"
        assert box.ctx is not None
        box.ctx.event()
        await rec.wait_for(lambda r: isinstance(r, Changed) and r.resource == "taker[t]", mark)
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert box.value == "hello"
    assert seen.changed == [frozenset({"want"}), frozenset()]


def test_a_receiver_is_not_checked_until_the_output_has_a_value() -> None:
    source, box, seen = Source(value=None), Box(), Seen()
    rec = Recorder()

    async def main() -> None:
        engine = Engine(_graph(source, box, seen), reporter=rec)
        task = asyncio.create_task(engine.run())
        mark = await _until(rec, 0, Converged)
        assert seen.changed == []
        source.value = "late"
        assert source.ctx is not None
        source.ctx.event()
        await rec.wait_for(lambda r: isinstance(r, Changed) and r.resource == "taker[t]", mark)
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert box.value == "late"
    waiting = [r for r in rec.of(Log) if r.resource == "taker[t]"]  # type: ignore[union-attr]
    assert [r.message for r in waiting] == [  # type: ignore[union-attr]
        "not checked: no value yet from emitter[e].value (for want)"
    ]


def test_exec_stdout_becomes_the_content_of_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    g: Graph[Resource[Any]] = Graph()
    g.add(Exec("gen", cmd=["printf", "made by exec\\n"]))
    g.add(File(str(out)), recv={"content": "exec[gen].stdout"})
    rec = Recorder()

    async def main() -> None:
        await asyncio.wait_for(Engine(g, reporter=rec, converged_timeout=0).run(), BOUND)

    asyncio.run(main())
    assert out.read_text() == "made by exec\n"


def test_graph_add_takes_an_output_reference_or_a_pair() -> None:
    source = Source()
    g: Graph[Resource[Any]] = Graph()
    emitter = g.add(_emitter(source))
    g.add(Probe.make("a", Box()), recv={"want": "emitter[e].value"})
    g.add(Probe.make("b", Box()), recv={"want": (emitter, "value")})
    assert [e.recv for e in g.edges()] == [(("want", "value"),), (("want", "value"),)]
    with pytest.raises(ValueError, match=r"write it as kind\[name\]\.output"):
        g.add(Probe.make("c", Box()), recv={"want": "emitter[e]"})


def test_the_engine_rejects_a_wrong_recv_in_a_graph_built_in_code() -> None:
    def engine_for(**recv: str) -> Engine:
        g: Graph[Resource[Any]] = Graph()
        g.add(_emitter(Source()))
        g.add(Probe.make("p", Box()), recv=recv)
        return Engine(g)

    with pytest.raises(GraphError, match=r"emitter\[e\]\.count is int, probe\[p\]\.want takes str"):
        engine_for(want="emitter[e].count")
    with pytest.raises(GraphError, match=r"emitter\[e\] has no output 'valeu'"):
        engine_for(want="emitter[e].valeu")
    with pytest.raises(GraphError, match=r"probe\[p\] has no parameter 'wnat'"):
        engine_for(wnat="emitter[e].value")


def test_a_parameter_received_from_two_senders_is_rejected() -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(_emitter(Source()))
    other = Emitter("f")
    other.source = Source()
    g.add(other)
    g.add(Probe.make("p", Box()), recv={"want": "emitter[e].value"})
    g.add_edge("emitter[f]", "probe[p]", recv={"want": "value"})
    with pytest.raises(GraphError, match="received from both"):
        Engine(g)


class Picky(Probe, kind="picky"):
    """A probe whose ``want`` may not be "bad"."""

    def validate(self) -> None:
        if self.params.want == "bad":
            raise ParamError("want", "must not be 'bad'")


def test_a_received_value_the_receiver_rejects_fails_it_until_a_good_one_comes() -> None:
    source, box = Source(value="good"), Box()
    g: Graph[Resource[Any]] = Graph()
    g.add(_emitter(source))
    picky = Picky("p")
    picky.box = box
    g.add(picky, recv={"want": "emitter[e].value"})
    rec = Recorder()

    async def set_value(value: str, kind: type) -> None:
        mark = len(rec.reports)
        source.value = value
        assert source.ctx is not None
        source.ctx.event()
        await rec.wait_for(lambda r: isinstance(r, kind) and r.resource == "picky[p]", mark)

    async def main() -> None:
        engine = Engine(g, reporter=rec)
        task = asyncio.create_task(engine.run())
        await _until(rec, 0, Converged)
        await set_value("bad", Failed)
        box.value = "drifted"  # the good value is back: the receiver is checked with it
        await set_value("good", Changed)
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert box.value == "good"
    (failed,) = rec.of(Failed)
    assert str(failed.error) == (  # type: ignore[union-attr]
        "picky[p]: with the received values (want from emitter[e].value): want: must not be 'bad'"
    )


def test_a_received_value_with_a_nul_byte_is_refused_like_a_written_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    g: Graph[Resource[Any]] = Graph()
    g.add(Exec("gen", cmd=["printf", "a\\000b"]))
    g.add(File(str(out)), recv={"content": "exec[gen].stdout"})
    rec = Recorder()

    async def main() -> None:
        await asyncio.wait_for(Engine(g, reporter=rec, converged_timeout=0).run(), BOUND)

    asyncio.run(main())
    assert not out.exists()
    (failed,) = rec.of(Failed)
    assert "content: contains a NUL byte" in str(failed.error)  # type: ignore[union-attr]
