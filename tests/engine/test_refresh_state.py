"""Refresh notifications kept in the state database: written before the sender is done,
removed only after the receiver handled them, so a SIGKILL in between loses nothing."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import textwrap
from pathlib import Path

from convergent.engine import Changed, Converged, Engine, Failed, Log
from convergent.graph import Graph
from convergent.resources.base import Resource
from convergent.state import StateDB
from tests.e2e.agent import Agent
from tests.engine.probe import Box, Probe
from tests.engine.support import BOUND, Recorder, graph_of

UP, DOWN = "probe[up]", "probe[down]"


def _notify_graph(up_box: Box, down_box: Box) -> Graph[Resource[object]]:
    g = graph_of(Probe.make("up", up_box), Probe.make("down", down_box))
    g.add_edge(UP, DOWN, notify=True)
    return g


def _converge(graph: Graph[Resource[object]], state: StateDB, **kwargs: object) -> Recorder:
    rec = Recorder()

    async def main() -> None:
        engine = Engine(graph, reporter=rec, state=state, converged_timeout=0, **kwargs)  # type: ignore[arg-type]
        await asyncio.wait_for(engine.run(), BOUND)

    asyncio.run(main())
    return rec


def test_a_refresh_stays_pending_in_the_database_until_the_receiver_handled_it(
    tmp_path: Path,
) -> None:
    up_box, down_box = Box(), Box(value="ok")
    down_box.refresh_gate = asyncio.Event()
    graph = _notify_graph(up_box, down_box)

    async def main() -> None:
        with StateDB(tmp_path / "state.db") as state:
            rec = Recorder()
            engine = Engine(graph, reporter=rec, state=state, converged_timeout=0)
            task = asyncio.create_task(engine.run())
            await asyncio.wait_for(down_box.refreshing.wait(), BOUND)
            # The sender is done and the receiver is inside refresh(): still pending.
            assert state.pending_refreshes() == {DOWN: {UP}}
            assert down_box.refresh_gate is not None
            down_box.refresh_gate.set()
            await asyncio.wait_for(task, BOUND)
            assert state.pending_refreshes() == {}

    asyncio.run(main())
    assert "refresh down from probe[up]" in down_box.journal


def test_pending_refreshes_are_delivered_at_start(tmp_path: Path) -> None:
    """A refresh left by an earlier run is handled although the sender changes nothing now."""
    with StateDB(tmp_path / "state.db") as state:
        state.add_refreshes(UP, [DOWN])
        state.add_refreshes("probe[gone]", [DOWN])  # a sender no longer in the graph counts
        state.add_refreshes(UP, ["probe[elsewhere]"])  # a receiver not in the graph is kept
        up_box, down_box = Box(value="ok"), Box(value="ok")
        _converge(_notify_graph(up_box, down_box), state)
        assert down_box.journal.count("refresh down from probe[gone],probe[up]") == 1
        assert not any(line.startswith("apply") for line in up_box.journal)
        assert state.pending_refreshes() == {"probe[elsewhere]": {UP}}


def test_several_changes_upstream_before_the_receiver_runs_give_one_refresh(
    tmp_path: Path,
) -> None:
    """``up`` changes twice while ``down`` waits for its other upstream ``slow``: one row in
    the database, one refresh."""
    up_box, down_box, slow_box = Box(), Box(value="ok"), Box()
    slow_box.gate = asyncio.Event()
    graph = _notify_graph(up_box, down_box)
    graph.add(Probe.make("slow", slow_box))
    graph.add_edge("probe[slow]", DOWN)

    async def main() -> None:
        with StateDB(tmp_path / "state.db") as state:
            rec = Recorder()
            engine = Engine(graph, reporter=rec, state=state)
            task = asyncio.create_task(engine.run())
            await rec.wait_for(lambda r: isinstance(r, Changed) and r.resource == UP)
            mark = len(rec.reports)
            up_box.value = "drifted"
            assert up_box.ctx is not None
            up_box.ctx.event()
            await rec.wait_for(lambda r: isinstance(r, Changed) and r.resource == UP, start=mark)
            assert state.pending_refreshes() == {DOWN: {UP}}
            assert not any(line.startswith("refresh") for line in down_box.journal)
            assert slow_box.gate is not None
            slow_box.gate.set()
            await rec.wait_for(lambda r: isinstance(r, Converged))
            assert state.pending_refreshes() == {}
            engine.stop()
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert [line for line in down_box.journal if line.startswith("refresh")] == [
        "refresh down from probe[up]"
    ]


def test_a_failed_refresh_stays_pending(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.db") as state:
        up_box, down_box = Box(), Box(value="ok", fail_refresh=True)
        rec = _converge(_notify_graph(up_box, down_box), state)
        assert [r.resource for r in rec.of(Failed)] == [DOWN]  # type: ignore[union-attr]
        assert state.pending_refreshes() == {DOWN: {UP}}


def test_noop_reads_pending_refreshes_and_never_writes_or_removes_them(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateDB(path) as state:
        state.add_refreshes(UP, [DOWN])
    before = path.read_bytes()
    with StateDB(path, readonly=True) as state:
        up_box, down_box = Box(), Box(value="ok")  # up would change (and notify) too
        rec = _converge(_notify_graph(up_box, down_box), state, noop=True)
        assert not rec.of(Failed)
        assert any(
            r.resource == DOWN and "would refresh (notified by probe[up])" in r.message  # type: ignore[union-attr]
            for r in rec.of(Log)
        )
        assert state.pending_refreshes() == {DOWN: {UP}}
    assert not any(line.startswith(("apply", "refresh")) for line in down_box.journal)
    assert up_box.value == ""
    assert path.read_bytes() == before


_RECEIVER = """\
import socket, sys
with open(sys.argv[1], "a") as runs:
    runs.write("ran\\n")
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[2])
sock.recv(1)  # blocks until the test answers or hangs up
"""


def test_refresh_survives_sigkill(tmp_path: Path) -> None:
    """The agent is killed after the sender changed (and wrote the refresh down) and while the
    receiver's refresh is still running; the next agent delivers the refresh.

    Without the database the second run would not refresh at all: the sender has nothing
    left to change, and the receiver is ``refresh_only``.
    """
    script = tmp_path / "receiver.py"
    script.write_text(_RECEIVER, encoding="utf-8")
    runs, sent = tmp_path / "runs", tmp_path / "sent"
    sock_path = tmp_path / "r.sock"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - exec: sender
                cmd: [touch, "{sent}"]
                creates: "{sent}"
                notify: exec[receiver]
              - exec: receiver
                cmd: ["{sys.executable}", "{script}", "{runs}", "{sock_path}"]
                refresh_only: true
            """
        ),
        encoding="utf-8",
    )
    state_dir = tmp_path / "state"
    args = ("run", str(policy), "--state-dir", str(state_dir), "--converged-timeout", "0")
    pending = {"exec[receiver]": {"exec[sender]"}}
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        server.listen()
        server.settimeout(BOUND * 2)
        with Agent(*args) as first:
            receiver, _ = server.accept()  # the receiver runs: the sender is done
            with receiver:
                with StateDB(state_dir / "state.db", readonly=True) as state:
                    assert state.pending_refreshes() == pending
                first.send(signal.SIGKILL)
                assert first.wait() == -signal.SIGKILL
            # Hanging up lets the orphaned receiver of the killed agent exit.
        with StateDB(state_dir / "state.db", readonly=True) as state:
            assert state.pending_refreshes() == pending
        assert sent.exists() and runs.read_text() == "ran\n"
        with Agent(*args) as second:
            receiver, _ = server.accept()
            with receiver:
                receiver.sendall(b"x")
            assert second.wait(timeout=BOUND * 2) == 0, second.err
    assert runs.read_text() == "ran\nran\n"
    assert any(line.startswith("exec[receiver]: ran (") for line in second.out), second.out
    assert not any(line.startswith("exec[sender]:") for line in second.out), second.out
    with StateDB(state_dir / "state.db", readonly=True) as state:
        assert state.pending_refreshes() == {}
