"""A real agent with its web view (``convergent run --http 127.0.0.1:0``), and clients
that read its event stream with every wait bounded."""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import httpx

from tests.e2e.agent import Agent

__all__ = ["BOUND", "WebAgent", "sse_events", "wait_for"]

BOUND = 20.0  # seconds any wait of these tests may take
_ADDRESS = re.compile(r"web view: (http://\S+/)$")


class WebAgent(Agent):
    """``convergent run ARGS`` whose stderr lines are read as they come: :attr:`url` is
    the address its web view says it listens on."""

    def __init__(self, *args: str) -> None:
        self._err_lines: queue.Queue[str | None] = queue.Queue()
        super().__init__(*args)
        self.url = self._address()

    def _read(self, stream: IO[str], into: list[str], is_stdout: bool) -> None:
        if is_stdout:
            super()._read(stream, into, is_stdout)
            return
        for line in stream:
            into.append(line.rstrip("\n"))
            self._err_lines.put(line.rstrip("\n"))
        self._err_lines.put(None)

    def _address(self) -> str:
        deadline = time.monotonic() + BOUND
        while True:
            try:
                line = self._err_lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no web view address; stderr: {self.err}") from None
            if line is None:
                raise AssertionError(f"convergent ended first: {self.out} {self.err}")
            found = _ADDRESS.search(line)
            if found:
                return found.group(1)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path.lstrip("/"), timeout=BOUND, **kwargs)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """The (event, data) pairs of a server-sent event stream, as they come."""
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith(":") or line.startswith("retry:"):
            continue
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


def wait_for(
    events: Iterator[tuple[str, Any]], predicate: Callable[[str, Any], bool]
) -> tuple[str, Any]:
    """The first event for which ``predicate`` holds (the stream's read timeout and
    :data:`BOUND` bound the wait)."""
    deadline = time.monotonic() + BOUND
    seen = []
    for name, data in events:
        seen.append((name, data))
        if predicate(name, data):
            return name, data
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no such event within {BOUND} s; saw {seen[-20:]}")
