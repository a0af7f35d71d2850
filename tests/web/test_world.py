"""The web view and the metrics of an agent that exchanges through a real etcd: host a
collects what b exports. a's view labels each collected vertex with the host that
exported it, marks what a exports, lists b (alive, converged) and forgets b when it
stops, each change of the list coming as a ``hosts`` event on the stream; a's metrics
count its round trips to etcd and the writes its watch reported.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.agent import Agent
from tests.etcd_support import etcd_member, require_etcd
from tests.observe.test_metrics import _samples
from tests.web.support import BOUND, WebAgent, sse_events, wait_for


@pytest.fixture(autouse=True)
def _fast_etcd(monkeypatch: pytest.MonkeyPatch) -> None:
    require_etcd()
    monkeypatch.setenv("CONVERGENT_ETCD_TIMING", "10,100")


@contextmanager
def _hosts_when(agent: WebAgent, holds: Callable[[Any], bool]) -> Iterator[Callable[[], Any]]:
    """Inside: the stream of ``agent`` is open; ``wait()`` returns its host list once
    ``holds`` is true of it: at once when ``/api/hosts``, read after the stream opened,
    says so, else at the ``hosts`` event that does (the stream bounds the wait)."""
    with httpx.stream("GET", agent.url + "api/events", timeout=BOUND) as response:
        events = sse_events(response)

        def wait() -> Any:
            found = agent.get("/api/hosts").json()
            if holds(found):
                return found
            _, data = wait_for(events, lambda name, data: name == "hosts" and holds(data))
            return {"host": found["host"], **data}

        yield wait


def _policy(path: Path, out: Path, exported: str, collect: bool) -> Path:
    text = (
        f"resources:\n  - file: {out}/\n    state: directory\n"
        f"  - file: {exported}\n    path: {out}/{exported}\n    content: x\n"
        "    meta: {export: true}\n"
    )
    if collect:
        text += f"collect:\n  - kind: file\n    pattern: {out}/\n"
    path.write_text(text)
    return path


def _agent(endpoint: str, tmp_path: Path, host: str, policy: Path, *extra: str) -> list[str]:
    return [
        "run", str(policy), "--hostname", host, "--state-dir", str(tmp_path / f"s{host}"),
        "--etcd-endpoints", endpoint, "--insecure", *extra,
    ]  # fmt: skip


def test_collected_vertices_name_their_host_and_other_hosts_are_listed(tmp_path: Path) -> None:
    out = tmp_path / "a-out"
    policy_a = _policy(tmp_path / "a.yaml", out, "fa", collect=True)
    policy_b = _policy(tmp_path / "b.yaml", tmp_path / "b-out", "fb", collect=False)
    with etcd_member(tmp_path) as member:
        b = Agent(*_agent(member.endpoint, tmp_path, "b", policy_b))
        try:
            b.wait_for_line(lambda line: line.startswith("converged"), BOUND)
            a_args = _agent(member.endpoint, tmp_path, "a", policy_a, "--http", "127.0.0.1:0")
            with WebAgent(*a_args, "--metrics", ":0") as a:
                metrics = a.wait_for_line(lambda line: line.startswith("metrics: "), BOUND)
                a.wait_for_line(lambda line: line == "file[fb]: created", BOUND)
                a.wait_for_line(lambda line: line.startswith("converged"), BOUND)

                data = a.get("/api/vertices").json()
                by_id = {v["id"]: v for v in data["vertices"]}
                assert by_id["file[fb]"]["origin"] == "b"
                assert by_id["file[fb]"]["exported"] is False
                assert by_id["file[fb]"]["params"]["path"] == f"{out}/fb"
                assert by_id["file[fa]"]["origin"] == "a"  # its own export, collected back
                assert by_id["file[fa]"]["exported"] is True
                assert by_id[f"file[{out}/]"]["origin"] is None
                assert data["exports"] == ["file[fa]"]
                assert a.get("/api/vertices/file[fb]").json()["origin"] == "b"

                with _hosts_when(a, lambda found: bool(found["hosts"])) as wait:
                    wait()  # b is listed (a read it from etcd at its start)
                with _hosts_when(
                    a, lambda found: found["hosts"] and found["hosts"][0]["converged"]
                ) as wait:
                    hosts = wait()
                assert hosts == {
                    "host": "a",
                    "hosts": [{"name": "b", "alive": True, "converged": True, "exports": 1}],
                    "exports": ["file[fa]"],
                }

                url = metrics.split(" ", 1)[1]
                before = _samples(url)
                sets = ("convergent_world_requests_total", (("op", "set"),))
                events = ("convergent_world_watch_events_total", ())
                assert before[sets] >= 2  # its export and its converged key, on etcd
                assert before[("convergent_world_request_seconds_count", (("op", "set"),))] >= 2
                assert before[("convergent_world_requests_total", (("op", "watch"),))] >= 1

                with httpx.stream("GET", a.url + "api/events", timeout=BOUND) as response:
                    stream = sse_events(response)
                    assert next(stream)[0] == "snapshot"  # subscribed: what follows is new
                    assert a.get("/api/hosts").json()["hosts"]  # b is still listed
                    b.send(signal.SIGTERM)
                    assert b.wait(BOUND) == 0
                    _, left = wait_for(stream, lambda n, data: n == "hosts" and not data["hosts"])
                    assert left == {"hosts": [], "exports": ["file[fa]"]}
                gone = a.get("/api/vertices").json()
                assert "file[fb]" not in {v["id"] for v in gone["vertices"]}
                after = _samples(url)
                assert after[events] > before[events]  # b's keys withdrawn, seen by a's watch
                a.send(signal.SIGTERM)
                assert a.wait(BOUND) == 0
        finally:
            b.__exit__(None, None, None)


def test_without_a_world_the_view_lists_no_hosts(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(f"resources:\n  - file: {tmp_path}/f\n    content: x\n")
    args = ("run", str(policy), "--state-dir", str(tmp_path / "s"), "--http", "127.0.0.1:0")
    with WebAgent(*args) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"), BOUND)
        assert agent.get("/api/hosts").json()["hosts"] == []
        data = agent.get("/api/vertices").json()
        assert data["hosts"] == [] and data["exports"] == []
        assert "origin" not in data["vertices"][0]
        agent.send(signal.SIGTERM)
        assert agent.wait(BOUND) == 0
