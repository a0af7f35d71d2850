"""The web view's starlette application. Read-only: every route is a GET (or HEAD); any
other method is refused with 405, and nothing a request says reaches the engine.

Routes:

- ``/``: the page; ``/static/app.js``, ``/static/style.css``: its script and style (from
  the package, so it works offline). They hold no data and need no token.
- ``/api/vertices``: every vertex (JSON): state, outcome, repairs, error, parameters
  (secrets hidden: :mod:`convergent.web.params`), last events, neighbours.
  Once the run exchanges through a world, a collected vertex says ``origin`` (the host
  that exported it), a vertex this host exports says ``exported: true``, and the answer
  has ``exports`` (this host's) and ``hosts`` (as ``/api/hosts``).
- ``/api/vertices/{id}``: one vertex (404 when there is none).
- ``/api/hosts``: the other hosts of the world (name, alive, converged, exports) and the
  ids this host exports; both empty without a world.
- ``/api/graph.svg``: the graph as the engine runs it (:mod:`convergent.web.svg`).
- ``/api/events``: server-sent events: ``snapshot`` first (every vertex's state), then
  ``state``, ``event``, ``graph`` (the graph changed: fetch it again), ``converged``,
  ``hosts`` (what ``/api/hosts`` answers, whenever another host appears, leaves,
  converges or changes its exports).

Access: with a token (``--http-token``) every ``/api/`` request must carry it, as
``Authorization: Bearer TOKEN`` or the cookie ``convergent_token`` (compared in constant
time). Without one (loopback only), a request must name the address the view listens on
in its ``Host`` header, so a page of another site that resolves its name to 127.0.0.1
(DNS rebinding) is refused.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import msgspec
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from convergent.resources.group import Group
from convergent.web.params import shown_params
from convergent.web.svg import DotMissing, plan_dot, render_svg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from convergent.engine.changeover import Plan
    from convergent.resources.base import Resource
    from convergent.web.board import Board

__all__ = ["COOKIE", "HEARTBEAT", "make_app"]

COOKIE = "convergent_token"
HEARTBEAT = 15.0  # seconds between keep-alive comments on the event stream
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _static(name: str) -> bytes:
    return resources.files("convergent.web").joinpath("static", name).read_bytes()


class _Guard:
    """ASGI middleware: methods, Host, token, security headers."""

    def __init__(self, app: ASGIApp, token: str | None, hosts: frozenset[str]) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        problem = self._refusal(scope, headers)

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.encode(), v.encode()) for k, v in _HEADERS.items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if problem is not None:
            status, text = problem
            await JSONResponse({"error": text}, status)(scope, receive, secured)
            return
        await self.app(scope, receive, secured)

    def _refusal(self, scope: Scope, headers: dict[str, bytes]) -> tuple[int, str] | None:
        if scope["method"] not in ("GET", "HEAD"):
            return 405, "the web view is read-only: only GET"
        path: str = scope["path"]
        if self.token is None:
            host = headers.get("host", b"").decode("latin-1").lower()
            if host not in self.hosts:
                return 403, "unknown Host: open the view at the address it listens on"
            return None
        if not path.startswith("/api/"):
            return None
        if not self._has_token(headers):
            return 401, "a token is needed (Authorization: Bearer TOKEN, or the page's form)"
        return None

    def _has_token(self, headers: dict[str, bytes]) -> bool:
        token = self.token
        assert token is not None
        given = b""
        auth = headers.get("authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        else:
            for part in headers.get("cookie", b"").split(b";"):
                name, _, value = part.strip().partition(b"=")
                if name == COOKIE.encode():
                    given = unquote_to_bytes(value.strip())
        return hmac.compare_digest(given, token)


def make_app(board: Board, token: str | None, hosts: frozenset[str]) -> _Guard:
    """The application serving ``board``. ``hosts``: the ``Host`` headers accepted
    without a token (``127.0.0.1:PORT``, ``localhost:PORT``)."""
    engine = board.engine
    world = engine.world
    hostname = world.hostname if world is not None else socket.gethostname()
    page = _static("index.html")
    static = {name: _static(name) for name in _STATIC}
    drawn: list[Any] = [None, ""]  # (plan, svg) of the last drawing
    drawing = asyncio.Lock()

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return JSONResponse({"error": "no such file"}, 404)
        return Response(static[name], media_type=_STATIC[name])

    def vertex(vid: str) -> dict[str, Any] | None:
        plan = engine.observe().plan
        payload = plan.graph.vertices.get(vid)
        view = board.views.get(vid)
        if payload is None or view is None:
            return None
        data: dict[str, Any] = {"id": vid, "kind": payload.kind, "name": payload.name}
        data.update(view.brief())
        if isinstance(payload, Group):
            data["members"] = [_resource(m, plan, engine.observe().hide) for m in payload.members]
        else:
            data.update(_resource(payload, plan, engine.observe().hide))
        seen = engine.observe().world()
        if seen is not None:
            data["origin"] = seen.origins.get(vid)
            data["exported"] = vid in seen.exports
        data["upstream"] = plan.graph.upstream(vid)
        data["downstream"] = plan.graph.downstream(vid)
        data["events"] = list(view.events)
        return data

    async def vertices(request: Request) -> Response:
        found = [vertex(vid) for vid in engine.observe().plan.graph.vertices]
        return _json(
            {
                "host": hostname,
                "noop": engine.noop,
                "converged": board.converged,
                "generation": board.generation,
                "vertices": [v for v in found if v is not None],
                **board.world(),
            }
        )

    async def hosts_of_world(request: Request) -> Response:
        return _json({"host": hostname, **board.world()})

    async def one(request: Request) -> Response:
        found = vertex(request.path_params["vid"])
        if found is None:
            return JSONResponse({"error": "no such vertex"}, 404)
        return _json(found)

    async def graph_svg(request: Request) -> Response:
        async with drawing:
            plan = engine.observe().plan
            if drawn[0] is not plan:
                try:
                    drawn[1] = await render_svg(plan_dot(plan))
                except DotMissing as exc:
                    return JSONResponse({"error": str(exc)}, 503)
                drawn[0] = plan
            svg: str = drawn[1]
        return Response(svg, media_type="image/svg+xml")

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _stream(board, request),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", asset, methods=["GET"]),
        Route("/api/vertices", vertices, methods=["GET"]),
        Route("/api/vertices/{vid:path}", one, methods=["GET"]),
        Route("/api/hosts", hosts_of_world, methods=["GET"]),
        Route("/api/graph.svg", graph_svg, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
    ]
    return _Guard(Starlette(routes=routes), token, hosts)


def _resource(resource: Resource[Any], plan: Plan, hide: Any) -> dict[str, Any]:
    received = {b.param: b.source for b in plan.bindings.get(resource.id, ())}
    return {
        "id": resource.id,
        "params": shown_params(resource.kind, resource.params, received, hide),
    }


def _json(data: Any) -> Response:
    return Response(msgspec.json.encode(data), media_type="application/json")


def _message(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


async def _stream(board: Board, request: Request) -> AsyncIterator[bytes]:
    subscriber = board.subscribe()
    try:
        yield b"retry: 1000\n" + _message("snapshot", board.snapshot())
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT):
                    item = await subscriber.queue.get()
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": alive\n\n"
                continue
            if item is None:
                return
            yield _message(*item)
    finally:
        board.unsubscribe(subscriber)
