"""``--noop`` predicts ``download``: its path becomes a file whose content is known only
once fetched. What reads another path downstream stays exact; a copy of the downloaded
file *may* change. The noop run fetches nothing (a real HTTP server on 127.0.0.1 counts
the requests); the real run does what the dry run said."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent import File, Graph, Resource
from convergent.resources.download import Download
from tests.noop.support import noop_then_real, then_a_file
from tests.resources.httpserver import Server

BODY = b"#!/bin/sh\necho tool 1.2\n"
SUM = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as running:
        running.files["/tool"] = BODY
        yield running


def test_a_file_downstream_of_a_download_is_exact(server: Server, tmp_path: Path) -> None:
    tool, conf = tmp_path / "tool", tmp_path / "tool.conf"
    download = Download(str(tool), url=server.url("/tool"), sha256=SUM, mode="0755")
    outcome = asyncio.run(noop_then_real(then_a_file(download, conf), str(tmp_path / "state")))
    assert outcome.may == {}
    assert outcome.would == outcome.real == {f"download[{tool}]", f"file[{conf}]"}
    assert len(server.requests("/tool")) == 1  # fetched by the real run only


def test_a_copy_of_a_file_about_to_be_downloaded_may_change(server: Server, tmp_path: Path) -> None:
    tool, copy = tmp_path / "tool", tmp_path / "copy"

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Download(str(tool), url=server.url("/tool"), sha256=SUM))
        g.add(File(str(copy), source=str(tool)), require=[f"download[{tool}]"])
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.would == {f"download[{tool}]"}
    assert set(outcome.may) == {f"file[{copy}]"}, outcome.may
    assert outcome.real == {f"download[{tool}]", f"file[{copy}]"}
    assert copy.read_bytes() == BODY
