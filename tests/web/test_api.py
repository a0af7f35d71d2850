"""The web view's JSON and event stream, read with an HTTP client from a real agent
(``convergent run --http 127.0.0.1:0``): what a script or the page sees."""

from __future__ import annotations

from urllib.parse import quote
from xml.etree import ElementTree

import httpx

from tests.web.conftest import Site
from tests.web.support import BOUND, sse_events, wait_for

SVG = "{http://www.w3.org/2000/svg}"


def _vertices(site: Site) -> dict[str, dict[str, object]]:
    response = site.agent.get("/api/vertices")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return {v["id"]: v for v in response.json()["vertices"]}


def test_every_vertex_is_listed_with_its_state_params_and_last_events(site: Site) -> None:
    root = site.root
    vertices = _vertices(site)
    assert set(vertices) == {
        f"file[{root}/d]",
        f"file[{root}/kept]",
        f"file[{root}/d/a]",
        "exec[after]",
        "password[db]",
        f"file[{root}/d/db.conf]",
        f"download[{root}/d/fetched]",
    }
    a = vertices[f"file[{root}/d/a]"]
    assert a["state"] == "converged" and a["outcome"] == "repaired"
    assert a["params"] == {"content": "a\n"}
    assert a["upstream"] == [f"file[{root}/d]"] and a["downstream"] == ["exec[after]"]
    assert [e["outcome"] for e in a["events"]][:1] == ["repaired"]  # type: ignore[index]
    kept = vertices[f"file[{root}/kept]"]
    assert kept["outcome"] == "kept" and kept["repairs"] == 0
    failed = vertices[f"download[{root}/d/fetched]"]
    assert failed["state"] == "failed" and failed["outcome"] == "failed"
    assert "fetching http://127.0.0.1:9/x?... failed" in str(failed["error"])


def test_one_vertex_is_found_by_its_id_and_an_unknown_one_is_404(site: Site) -> None:
    vid = f"file[{site.root}/kept]"
    one = site.agent.get("/api/vertices/" + quote(vid))
    assert one.status_code == 200 and one.json()["id"] == vid
    missing = site.agent.get("/api/vertices/" + quote("file[/nowhere]"))
    assert missing.status_code == 404


def test_the_graph_is_svg_with_each_vertex_id_as_an_element_id(site: Site) -> None:
    response = site.agent.get("/api/graph.svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    svg = ElementTree.fromstring(response.content)
    nodes = {g.get("id") for g in svg.iter(SVG + "g") if g.get("class") == "node"}
    assert nodes == set(_vertices(site))
    dotted = [p for p in svg.iter(SVG + "path") if p.get("stroke-dasharray") == "1,5"]
    assert dotted  # an automatic edge (a file in its directory) is drawn dotted


def test_the_event_stream_starts_with_a_snapshot_then_shows_a_repair(site: Site) -> None:
    vid = f"file[{site.root}/kept]"
    with httpx.stream("GET", site.agent.url + "api/events", timeout=BOUND) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        name, snapshot = next(events)
        assert name == "snapshot"
        assert snapshot["vertices"][vid]["state"] == "converged"
        site.kept.unlink()
        _, repaired = wait_for(events, lambda n, d: n == "event" and d["id"] == vid)
        assert repaired["outcome"] == "repaired" and repaired["text"] == "created"
        wait_for(
            events,
            lambda n, d: n == "state" and d["id"] == vid and d["state"] == "converged",
        )
    assert site.kept.read_text() == "kept\n"
    assert _vertices(site)[vid]["repairs"] == 1


def test_no_request_changes_anything(site: Site) -> None:
    """Every method but GET is refused, on every route; the agent runs on unchanged."""
    before = site.kept.read_text()
    for path in ("/", "/api/vertices", "/api/events", "/api/graph.svg", "/api/vertices/x"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = httpx.request(method, site.agent.url + path.lstrip("/"), timeout=BOUND)
            assert response.status_code == 405, (method, path)
    assert site.kept.read_text() == before
    assert site.agent.proc.poll() is None


def test_no_secret_reaches_any_response(site: Site) -> None:
    texts = [site.agent.get(p).text for p in ("/", "/static/app.js", "/api/vertices")]
    texts.append(site.agent.get("/api/graph.svg").text)
    for vid in _vertices(site):
        texts.append(site.agent.get("/api/vertices/" + quote(vid)).text)
    with httpx.stream("GET", site.agent.url + "api/events", timeout=BOUND) as response:
        texts.append(str(next(sse_events(response))))
    everything = "\n".join(texts)
    for secret in site.secrets():
        assert secret not in everything
    db = _vertices(site)[f"file[{site.root}/d/db.conf]"]
    assert db["params"]["content"] == "<received from password[db].password>"  # type: ignore[index]
    fetched = _vertices(site)[f"download[{site.root}/d/fetched]"]
    assert fetched["params"]["headers"] == {"Authorization": "<secret>"}  # type: ignore[index]
    assert fetched["params"]["url"] == "http://127.0.0.1:9/x"  # type: ignore[index]
    assert _vertices(site)["exec[after]"]["params"]["env"] == {"TOKEN": "<secret>"}  # type: ignore[index]


def test_a_page_of_another_site_resolving_to_loopback_is_refused(site: Site) -> None:
    """DNS rebinding: a browser sends the other site's name as Host."""
    port = site.agent.url.rsplit(":", 1)[1].strip("/")
    response = site.agent.get("/api/vertices", headers={"Host": f"evil.example:{port}"})
    assert response.status_code == 403
    assert site.agent.get("/api/vertices", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_the_page_and_its_files_come_from_the_agent_itself(site: Site) -> None:
    page = site.agent.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ('src="/static/app.js"', 'href="/static/style.css"'):
        assert path in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
    assert site.agent.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert site.agent.get("/static/style.css").status_code == 200
    assert site.agent.get("/static/nothing.js").status_code == 404
