"""What the web view draws and shows, without a server: the graph as the engine runs it
(groups, automatic edges, bundles) and parameters with every secret hidden."""

from __future__ import annotations

import shutil
from typing import Any

import msgspec
import pytest

from convergent.engine.changeover import Plan
from convergent.graph import Graph
from convergent.resources.base import Resource, get_kind
from convergent.web.params import MAX_TEXT, shown_params
from convergent.web.svg import plan_dot, render_svg


def make(kind: str, name: str, **params: Any) -> Resource[Any]:
    cls = get_kind(kind)
    assert cls is not None
    return cls(name, **params)


class Bundled(Graph[Any]):
    """A graph with bundle uses (``Graph.clusters``, where the policy language has them)."""


def _plan() -> Plan:
    g: Bundled = Bundled()
    g.add(make("file", "/srv/app", state="directory"))
    g.add(make("file", "/srv/app/conf", content="x\n"))
    g.add(make("noop", "a"))
    g.add(make("noop", "b"))
    g.add(make("exec", "reload", cmd=["true"]))
    g.add_edge("file[/srv/app/conf]", "exec[reload]", notify=True)
    g.clusters = {"site[main]": ("file[/srv/app]", "file[/srv/app/conf]")}
    return Plan(g)


def test_the_drawing_is_the_graph_the_engine_runs() -> None:
    dot = plan_dot(_plan())
    assert (
        '"autogroup[noop:a,b]" [id="autogroup[noop:a,b]", label="autogroup\\nnoop[a]\\nnoop[b]"]'
        in dot
    )
    assert '"file[/srv/app]" -> "file[/srv/app/conf]" [style=dotted];' in dot  # automatic
    assert '"file[/srv/app/conf]" -> "exec[reload]" [style=dashed, label="notify"' in dot
    cluster = dot[dot.index("subgraph cluster_0") :]
    assert 'label="site[main]"' in cluster.split("}")[0]
    assert '"file[/srv/app/conf]" [id=' in cluster.split("}")[0]


def test_a_name_cannot_break_out_of_the_drawing() -> None:
    g: Graph[Any] = Graph()
    g.add(make("noop", 'x" onclick="alert(1)\n<script>'))
    dot = plan_dot(Plan(g))
    assert '\\" onclick=\\"alert(1)\\\\x0a<script>' in dot
    if shutil.which("dot"):
        import asyncio

        svg = asyncio.run(render_svg(dot))
        assert "<script>" not in svg and "&lt;script&gt;" in svg


def _params(**fields: Any) -> msgspec.Struct:
    return make("download", "/x", sha256="0" * 64, **fields).params


def test_credentials_in_parameters_are_hidden() -> None:
    params = _params(
        url="https://u:pw-123@example.org:8443/f?token=t-456#frag",
        headers={"Authorization": "Bearer hdr-789"},
    )
    shown = shown_params("download", params, {}, lambda text: text)
    assert shown["url"] == "https://example.org:8443/f"
    assert shown["headers"] == {"Authorization": "<secret>"}
    assert "pw-123" not in str(shown) and "t-456" not in str(shown) and "hdr-789" not in str(shown)
    user = make("user", "alice", password_hash="$6$salt$hash").params
    assert shown_params("user", user, {}, lambda text: text)["password_hash"] == "<secret>"


def test_a_received_parameter_shows_its_sender_never_its_value() -> None:
    params = make("file", "/etc/db.conf", content="the secret value").params
    shown = shown_params("file", params, {"content": "password[db].password"}, lambda t: t)
    assert shown == {"content": "<received from password[db].password>"}


def test_a_secret_the_run_knows_is_hidden_wherever_it_is_written() -> None:
    params = make("exec", "x", cmd=["mysql", "-pknown-secret"]).params
    shown = shown_params("exec", params, {}, lambda t: t.replace("known-secret", "<secret>"))
    assert shown["cmd"] == ["mysql", "-p<secret>"]


def test_defaults_are_left_out_and_long_texts_cut() -> None:
    params = make("file", "/big", content="y" * (MAX_TEXT + 10)).params
    shown = shown_params("file", params, {}, lambda t: t)
    assert set(shown) == {"content"}
    assert shown["content"].startswith("y" * MAX_TEXT) and shown["content"].endswith(
        "(10 more characters)"
    )


@pytest.mark.parametrize("kind", ["file", "exec", "noop"])
def test_every_parameter_shown_is_plain_json(kind: str) -> None:
    extra = {"cmd": ["true"]} if kind == "exec" else {}
    resource = make(kind, "/x" if kind == "file" else "x", **extra)
    msgspec.json.encode(shown_params(kind, resource.params, {}, lambda t: t))


def test_a_client_that_falls_behind_is_dropped_not_waited_for() -> None:
    """A stalled browser must never hold the engine: its stream ends (it reconnects)."""
    import asyncio

    from convergent.engine import Engine, VertexState
    from convergent.web.board import QUEUE, Board

    async def main() -> None:
        g: Graph[Any] = Graph()
        g.add(make("noop", "x"))
        board = Board(Engine(g))
        slow, live = board.subscribe(), board.subscribe()
        for i in range(QUEUE + 5):
            board.on_state(VertexState("noop[x]", "checking" if i % 2 else "converged"))
            while not live.queue.empty():  # a client that keeps up
                live.queue.get_nowait()
        assert slow.dropped and slow not in board.subscribers
        assert slow.queue.get_nowait() is None  # its stream ends here
        assert live in board.subscribers and not live.dropped
        board.close()
        assert live.queue.get_nowait() is None

    asyncio.run(main())
