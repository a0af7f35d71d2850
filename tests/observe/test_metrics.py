"""``--metrics``: a running agent's Prometheus metrics, scraped over HTTP as Prometheus
would; a repair of drift shows up in them."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from convergent.web.metrics import parse_address
from tests.e2e.agent import Agent
from tests.etcd_support import etcd_member, require_etcd


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(url, timeout=10.0)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_repair_of_drift_is_counted_and_timed_in_the_metrics(tmp_path: Path) -> None:
    target = tmp_path / "f"
    policy = tmp_path / "p.yaml"
    policy.write_text(f"resources:\n  - file: {target}\n    content: x\n")
    args = ("run", str(policy), "--state-dir", str(tmp_path / "state"), "--metrics", ":0")
    with Agent(*args) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"))
        url = agent.wait_for_line(lambda line: line.startswith("metrics: ")).split(" ", 1)[1]
        assert url.startswith("http://127.0.0.1:")  # the default address
        before = _samples(url)
        file = (("kind", "file"),)
        assert before[("convergent_repairs_total", file)] == 1  # created at start-up
        assert before[("convergent_converged", ())] == 1
        assert before[("convergent_resources", ())] == 1
        assert before[("convergent_watches", ())] == 1
        assert ("convergent_event_to_repair_seconds_count", file) not in before

        target.unlink()
        agent.wait_for_line(lambda line: line == f"file[{target}]: created")
        agent.wait_for_line(lambda line: line == "converged")
        after = _samples(url)
        assert after[("convergent_repairs_total", file)] == 2
        assert after[("convergent_applies_total", file)] == 2
        assert after[("convergent_checks_total", file)] > before[("convergent_checks_total", file)]
        assert after[("convergent_event_to_repair_seconds_count", file)] == 1
        assert after[("convergent_apply_seconds_count", file)] == 2
        assert after[("convergent_failures_total", file)] == 0
        assert after[("convergent_vertices", (("state", "converged"),))] == 1

        assert httpx.get(url.replace("/metrics", "/other"), timeout=10.0).status_code == 404
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0


def test_the_metrics_address_is_local_unless_told_and_checked() -> None:
    assert parse_address("9100") == ("127.0.0.1", 9100)
    assert parse_address(":9100") == ("127.0.0.1", 9100)
    assert parse_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_address("[::1]:9100") == ("::1", 9100)
    for bad in ("host:port", "1.2.3.4:70000"):
        with pytest.raises(ValueError, match=r"ADDR:PORT|0-65535"):
            parse_address(bad)


def test_the_world_round_trips_are_counted_and_timed_and_grow_with_new_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real etcd: the requests counted are the engine's calls to it."""
    require_etcd()
    monkeypatch.setenv("CONVERGENT_ETCD_TIMING", "10,100")
    out = tmp_path / "out"
    policy = tmp_path / "p.yaml"

    def text(*names: str) -> str:
        exports = "".join(
            f"  - file: {n}\n    path: {out}/{n}\n    content: x\n    meta: {{export: true}}\n"
            for n in names
        )
        head = f"resources:\n  - file: {out}/\n    state: directory\n"
        return head + exports + f"collect:\n  - kind: file\n    pattern: {out}/\n"

    policy.write_text(text("one"))
    args = ("run", str(policy), "--state-dir", str(tmp_path / "state"), "--hostname", "a")
    with etcd_member(tmp_path) as member:
        world = ("--etcd-endpoints", member.endpoint, "--insecure")
        with Agent(*args, *world, "--metrics", ":0") as agent:
            line = agent.wait_for_line(lambda line: line.startswith("metrics: "), 20.0)
            url = line.split(" ", 1)[1]
            agent.wait_for_line(lambda line: line == "file[one]: created", 20.0)
            agent.wait_for_line(lambda line: line.startswith("converged"), 20.0)
            before = _samples(url)
            sets = ("convergent_world_requests_total", (("op", "set"),))
            events = ("convergent_world_watch_events_total", ())
            assert before[sets] >= 1  # the export published
            assert before[("convergent_world_requests_total", (("op", "watch"),))] >= 1
            timed = before[("convergent_world_request_seconds_count", (("op", "set"),))]
            assert timed == before[sets]
            assert before[("convergent_world_errors_total", (("op", "set"),))] == 0

            policy.write_text(text("one", "two"))
            agent.wait_for_line(lambda line: line == "file[two]: created", 20.0)
            after = _samples(url)
            assert after[sets] > before[sets]
            assert after[events] > before[events]  # its own export, seen through its watch
            agent.send(signal.SIGTERM)
            assert agent.wait(20.0) == 0


def test_the_local_world_has_no_round_trips_to_count(tmp_path: Path) -> None:
    out = tmp_path / "out"
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"resources:\n  - file: {out}/\n    state: directory\n"
        f"  - file: one\n    path: {out}/one\n    content: x\n    meta: {{export: true}}\n"
        f"collect:\n  - kind: file\n    pattern: {out}/\n"
    )
    args = ("run", str(policy), "--state-dir", str(tmp_path / "state"), "--hostname", "a")
    with Agent(*args, "--metrics", ":0") as agent:
        url = agent.wait_for_line(lambda line: line.startswith("metrics: ")).split(" ", 1)[1]
        agent.wait_for_line(lambda line: line == "file[one]: created")
        agent.wait_for_line(lambda line: line.startswith("converged"))
        found = _samples(url)
        assert not [labels for name, labels in found if name == "convergent_world_requests_total"]
        assert found[("convergent_world_watch_events_total", ())] == 0
        assert found[("convergent_repairs_total", (("kind", "file"),))] == 2
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0
