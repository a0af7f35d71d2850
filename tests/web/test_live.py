"""The web view follows the run as it changes: a new policy redraws the graph, a group
shows its members, and the view never keeps the agent from stopping."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import httpx

from tests.web.support import BOUND, WebAgent, sse_events, wait_for

SVG = "{http://www.w3.org/2000/svg}"


def _save(policy: Path, text: str) -> None:
    """As an editor saves: a new file renamed over the old one."""
    temp = policy.with_suffix(".tmp")
    temp.write_text(text)
    temp.replace(policy)


def _nodes(agent: WebAgent) -> set[str | None]:
    svg = ElementTree.fromstring(agent.get("/api/graph.svg").content)
    return {g.get("id") for g in svg.iter(SVG + "g") if g.get("class") == "node"}


def test_a_new_policy_redraws_the_graph_and_a_group_shows_its_members(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    first = f'resources:\n  - file: {tmp_path}/one\n    content: "1\\n"\n'
    policy.write_text(first)
    args = ["run", str(policy), "--state-dir", str(tmp_path / "st"), "--http", "127.0.0.1:0"]
    with WebAgent(*args) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"))
        assert _nodes(agent) == {f"file[{tmp_path}/one]"}
        with httpx.stream("GET", agent.url + "api/events", timeout=BOUND) as response:
            events = sse_events(response)
            assert next(events)[0] == "snapshot"
            _save(policy, first + "  - noop: a\n  - noop: b\n")
            wait_for(events, lambda name, data: name == "graph")
            group = "autogroup[noop:a,b]"
            wait_for(
                events,
                lambda n, d: n == "state" and d["id"] == group and d["state"] == "converged",
            )
        assert _nodes(agent) == {f"file[{tmp_path}/one]", group}
        vertex = agent.get("/api/vertices/" + quote(group)).json()
        assert [m["id"] for m in vertex["members"]] == ["noop[a]", "noop[b]"]
        assert vertex["state"] == "converged"


def test_an_open_event_stream_does_not_hold_the_agent_at_sigterm(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'resources:\n  - file: {tmp_path}/one\n    content: "1\\n"\n')
    args = ["run", str(policy), "--state-dir", str(tmp_path / "st"), "--http", "127.0.0.1:0"]
    with WebAgent(*args) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"))
        with httpx.stream("GET", agent.url + "api/events", timeout=BOUND) as response:
            events = sse_events(response)
            assert next(events)[0] == "snapshot"
            agent.send(signal.SIGTERM)
            assert agent.wait(timeout=BOUND) == 0
            assert list(events) == []  # the agent ended the stream cleanly
        assert any(line.startswith("resources: 1") for line in agent.out)


def test_an_address_in_use_changes_nothing(tmp_path: Path) -> None:
    import socket

    from tests.e2e.agent import convergent

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        policy = tmp_path / "policy.yaml"
        policy.write_text(f'resources:\n  - file: {tmp_path}/one\n    content: "1\\n"\n')
        done = convergent(
            "run", str(policy), "--state-dir", str(tmp_path / "st"), "--http", f"127.0.0.1:{port}"
        )
    finally:
        busy.close()
    assert done.returncode == 2
    assert f"--http: cannot listen on http://127.0.0.1:{port}/" in done.stderr
    assert "nothing was changed" in done.stderr
    assert not (tmp_path / "one").exists()
