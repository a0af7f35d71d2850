"""``convergent run --metrics ADDR:PORT``: Prometheus metrics of a running agent.

Served by the agent's own event loop (a small HTTP/1.0 responder: ``GET /metrics``), so
every figure is read on the loop that changes it; prometheus-client is imported only
when the option is given. Bound to 127.0.0.1 unless an address is given; read-only.

=========================================== ===== =====================================
metric                                      type  what
=========================================== ===== =====================================
convergent_checks_total{kind}               count passes (a check, and an apply when
                                                  one was needed)
convergent_applies_total{kind}              count changes made (or refreshes run)
convergent_repairs_total{kind}              count the same, counted as repairs
                                                  (outcome ``repaired``)
convergent_failures_total{kind}             count failed passes (each try)
convergent_blocked_total{kind}              count times a resource was blocked
convergent_check_seconds{kind}              hist  the check part of a pass
convergent_apply_seconds{kind}              hist  the apply part of a repair
convergent_event_to_repair_seconds{kind}    hist  from the event that revealed drift
                                                  to the end of its repair
convergent_converged                        gauge 1 when the graph is converged
convergent_resources                        gauge vertices in the running graph
convergent_edges                            gauge edges in the running graph
convergent_vertices{state}                  gauge vertices by state (waiting,
                                                  checking, converged, failed...)
convergent_watches                          gauge resources whose watch is ready
convergent_world_requests_total{op}         count requests to the world (etcd): get,
                                                  get_prefix, set, delete, watch, members
convergent_world_request_seconds{op}        hist  their round trips
convergent_world_errors_total{op}           count those that failed
convergent_world_watch_events_total         count writes the world's watches reported
=========================================== ===== =====================================

The world's figures exist when the run shares a world with other hosts
(``--etcd-endpoints``, a cluster; the local world has no round trips):
:meth:`Metrics.metered` wraps it, so a run without ``--metrics`` talks to its world
directly.

``kind`` is the resource's kind (``file``, ``exec``); names never carry a resource's
name, so the number of series stays bounded by the kinds installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from convergent.engine.events import Event
    from convergent.engine.runner import Engine
    from convergent.world.base import Unsubscribe, WatchCallback, World

__all__ = ["DEFAULT_ADDRESS", "MeteredWorld", "Metrics", "parse_address"]

T = TypeVar("T")
WORLD_OPS = ("get", "get_prefix", "set", "delete", "watch", "members")

DEFAULT_ADDRESS = "127.0.0.1"
_REQUEST_MAX = 8192
_REQUEST_TIMEOUT = 5.0
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``:PORT``, ``PORT`` or ``[V6]:PORT`` as (address, port); the
    address defaults to 127.0.0.1. ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or DEFAULT_ADDRESS
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: give ADDR:PORT, e.g. 127.0.0.1:9100") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{text!r}: the port must be 0-65535")
    return host, number


class Metrics:
    """The agent's metrics: fed by its events, read from its engine at each scrape."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.engine: Engine | None = None

        def counter(name: str, text: str) -> Any:
            return Counter(name, text, ["kind"], registry=registry)

        def histogram(name: str, text: str) -> Any:
            return Histogram(name, text, ["kind"], buckets=_LATENCY, registry=registry)

        self._checks = counter("convergent_checks", "Check passes, by kind")
        self._applies = counter("convergent_applies", "Changes made (or refreshes run), by kind")
        self._repairs = counter("convergent_repairs", "Repairs (outcome repaired), by kind")
        self._failures = counter("convergent_failures", "Failed passes (each try), by kind")
        self._blocked = counter("convergent_blocked", "Times a resource was blocked, by kind")
        self._check_seconds = histogram("convergent_check_seconds", "Check time, by kind")
        self._apply_seconds = histogram("convergent_apply_seconds", "Apply time, by kind")
        self._latency = histogram(
            "convergent_event_to_repair_seconds",
            "From the event that revealed drift to the end of its repair, by kind",
        )
        self._world_requests = Counter(
            "convergent_world_requests", "Requests to the world, by operation", ["op"],
            registry=registry,
        )  # fmt: skip
        self._world_errors = Counter(
            "convergent_world_errors", "Requests to the world that failed, by operation",
            ["op"], registry=registry,
        )  # fmt: skip
        self._world_seconds = Histogram(
            "convergent_world_request_seconds", "Round trips to the world, by operation",
            ["op"], buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.world_events = Counter(
            "convergent_world_watch_events", "Writes reported by the world's watches",
            registry=registry,
        )  # fmt: skip
        self._children: dict[tuple[int, str], Any] = {}
        registry.register(_EngineCollector(lambda: self.engine))

    def _child(self, metric: Any, kind: str) -> Any:
        key = (id(metric), kind)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(kind)
        return child

    def saw(self, event: Event) -> None:
        """An event listener (engine/events.py)."""
        kind = event.resource.partition("[")[0]
        outcome = event.outcome
        if (id(self._failures), kind) not in self._children:  # a new kind: every count at 0
            for metric in (self._checks, self._applies, self._repairs, self._failures):
                self._child(metric, kind)
            self._child(self._blocked, kind)
        if outcome == "blocked":
            self._child(self._blocked, kind).inc()
            return
        self._child(self._checks, kind).inc()
        self._child(self._check_seconds, kind).observe(
            max(0.0, event.seconds - event.apply_seconds)
        )
        if outcome == "repaired":
            self._child(self._applies, kind).inc()
            self._child(self._repairs, kind).inc()
            self._child(self._apply_seconds, kind).observe(event.apply_seconds)
            if event.latency is not None:
                self._child(self._latency, kind).observe(event.latency)
        elif outcome == "failed":
            self._child(self._failures, kind).inc()

    def metered(self, world: World) -> MeteredWorld:
        """``world``, its requests counted and timed (every operation at 0 from now)."""
        for op in WORLD_OPS:
            self._child(self._world_requests, op)
            self._child(self._world_errors, op)
        return MeteredWorld(world, self)

    def world_request(self, op: str, seconds: float, failed: bool) -> None:
        """A request ``op`` to the world took ``seconds`` (and failed, or not)."""
        self._child(self._world_requests, op).inc()
        self._child(self._world_seconds, op).observe(seconds)
        if failed:
            self._child(self._world_errors, op).inc()

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    async def serve(
        self, engine: Engine, host: str, port: int, listening: Callable[[str], None]
    ) -> None:
        """Serve ``GET /metrics`` on ``host:port`` until cancelled; ``listening`` is told
        the URL once the socket is bound (port 0: the one the system chose). Raises
        OSError when it cannot bind."""
        self.engine = engine
        server = await asyncio.start_server(self._client, host, port)
        sockname = server.sockets[0].getsockname()
        shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        listening(f"http://{shown}:{sockname[1]}/metrics")
        try:
            await asyncio.Event().wait()
        finally:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _REQUEST_MAX:
                raise ValueError("request too large")
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method not in (b"GET", b"HEAD") or path not in (b"/metrics", b"/"):
                body, status, kind = b"not found: GET /metrics\n", b"404 Not Found", b"text/plain"
            else:
                from prometheus_client import CONTENT_TYPE_LATEST

                body, status, kind = self.text(), b"200 OK", CONTENT_TYPE_LATEST.encode()
            writer.write(
                b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + (body if method != b"HEAD" else b"")
            )  # fmt: skip
            await writer.drain()
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class MeteredWorld:
    """A world whose requests are counted and timed in ``metrics``; everything else
    (``hostname``, ``lock``, ``aclose``...) is the world's own."""

    def __init__(self, world: World, metrics: Metrics) -> None:
        self.world = world
        self.hostname = world.hostname
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world, name)

    async def _timed(self, op: str, request: Awaitable[T]) -> T:
        began = time.perf_counter()
        failed = True
        try:
            result = await request
            failed = False
            return result
        finally:
            self._metrics.world_request(op, time.perf_counter() - began, failed)

    async def get(self, key: str) -> str | None:
        return await self._timed("get", self.world.get(key))

    async def get_prefix(self, prefix: str) -> dict[str, str]:
        return await self._timed("get_prefix", self.world.get_prefix(prefix))

    async def set(self, key: str, value: str, *, lease: bool = False) -> None:
        await self._timed("set", self.world.set(key, value, lease=lease))

    async def set_many(self, items: Mapping[str, str], *, lease: bool = False) -> None:
        await self._timed("set", self.world.set_many(items, lease=lease))

    async def delete(self, key: str) -> None:
        await self._timed("delete", self.world.delete(key))

    async def delete_many(self, names: Iterable[str]) -> None:
        await self._timed("delete", self.world.delete_many(names))

    async def members(self) -> dict[str, str]:
        return await self._timed("members", self.world.members())

    async def watch(
        self, key: str, callback: WatchCallback, *, prefix: bool = False
    ) -> Unsubscribe:
        counter = self._metrics.world_events

        def counted(key: str, value: str | None) -> None:
            counter.inc()
            callback(key, value)

        return await self._timed("watch", self.world.watch(key, counted, prefix=prefix))

    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.world.lock(name)


class _EngineCollector:
    """The gauges read from the engine at each scrape (on its loop)."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        engine = self._engine()
        if engine is None:
            return
        states = engine.vertex_states()
        yield GaugeMetricFamily(
            "convergent_converged", "1 when the graph is converged", value=int(engine.converged)
        )
        yield GaugeMetricFamily(
            "convergent_resources", "Vertices in the running graph", value=len(states)
        )
        yield GaugeMetricFamily(
            "convergent_edges",
            "Edges in the running graph",
            value=sum(1 for _ in engine.graph.edges()),
        )
        by_state = GaugeMetricFamily("convergent_vertices", "Vertices by state", labels=["state"])
        counts: dict[str, int] = {}
        for name in states.values():
            counts[name] = counts.get(name, 0) + 1
        for name, count in sorted(counts.items()):
            by_state.add_metric([name], count)
        yield by_state
        workers = getattr(engine, "_workers", {})  # the engine's workers, read on its loop
        yield GaugeMetricFamily(
            "convergent_watches",
            "Resources whose watch is ready",
            value=sum(1 for w in workers.values() if w.ready),
        )
