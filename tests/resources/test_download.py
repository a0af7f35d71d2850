"""The ``download`` kind against a real HTTP server on 127.0.0.1: verified before it is
used, never fetched again when it matches, conditional requests for checksum files,
failures that leave the old file intact, noop inert."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Converged, WouldChange
from convergent.errors import ParamError, PolicyError, ResourceError
from convergent.graph import Graph
from convergent.policy import load_policy_text
from convergent.resources.base import Resource
from convergent.resources.download import Download, shown_url
from tests.resources.httpserver import Server
from tests.resources.kinds import (
    Reports,
    Shared,
    apply,
    check,
    context,
    converge,
    engine_run,
    run,
)

BODY = b"#!/bin/sh\necho tool 1.2\n"
SUM = hashlib.sha256(BODY).hexdigest()
NOBODY = 65534
NEW = b"tool 1.3\n"


@pytest.fixture
def server() -> Any:
    with Server() as running:
        running.files["/tool"] = BODY
        yield running


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _temp_modes(directory: Path) -> list[int]:
    return [stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if ".convergent-" in p.name]


def test_a_pinned_file_is_fetched_verified_and_never_fetched_again(
    server: Server, tmp_path: Path
) -> None:
    target = tmp_path / "tool"
    resource = Download(str(target), url=server.url("/tool"), sha256=SUM, mode="0755")
    change = converge(resource)
    assert change is not None and change.summary == "downloaded"
    assert target.read_bytes() == BODY
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert len(server.requests("/tool")) == 1  # the second check asked nothing
    assert check(Download(str(target), url=server.url("/tool"), sha256=SUM.upper())) is None
    assert len(server.log) == 1
    assert _files(tmp_path) == ["tool"]


def test_a_mismatched_checksum_fails_and_leaves_the_old_file_intact(
    server: Server, tmp_path: Path
) -> None:
    target = tmp_path / "tool"
    target.write_bytes(b"old\n")
    target.chmod(0o640)
    before = target.stat()
    wrong = "ab" * 32
    resource = Download(str(target), url=server.url("/tool"), sha256=wrong)
    change = check(resource)
    assert change is not None and change.summary.startswith("content changed (sha256 ")
    with pytest.raises(ResourceError) as caught:
        apply(resource, change)
    message = str(caught.value)
    assert f"checksum mismatch for {server.url('/tool')}: expected sha256 {wrong}" in message
    assert f"got {SUM}" in message and f"{target} is left as it was" in message
    assert target.read_bytes() == b"old\n"
    assert target.stat().st_ino == before.st_ino
    assert _files(tmp_path) == ["tool"]  # no temp file left


def test_a_replaced_file_keeps_its_mode_and_owner_unless_given(
    server: Server, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another owner")
    kept = tmp_path / "kept"
    kept.write_bytes(b"old")
    kept.chmod(0o600)
    os.chown(kept, NOBODY, NOBODY)
    converge(Download(str(kept), url=server.url("/tool"), sha256=SUM))
    st = kept.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, NOBODY, NOBODY)
    given = tmp_path / "given"
    converge(Download(str(given), url=server.url("/tool"), sha256=SUM, owner=str(NOBODY)))
    assert given.stat().st_uid == NOBODY
    os.chown(given, 0, 0)
    change = converge(Download(str(given), url=server.url("/tool"), sha256=SUM, owner="65534"))
    assert change is not None and change.summary == f"owner 0 -> {NOBODY}"
    assert len(server.requests("/tool")) == 2  # a meta change fetches nothing


def test_the_temp_file_is_private_until_the_body_is_verified(
    server: Server, tmp_path: Path
) -> None:
    target = tmp_path / "tool"
    resource = Download(str(target), url=server.url("/hold/tool"), sha256=SUM, mode="0644")
    shared = Shared()

    async def main() -> None:
        ctx = context(resource, shared)
        change = await resource.check(ctx)
        assert change is not None
        task = asyncio.create_task(resource.apply(ctx, change))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, server.requested.wait, 10)
        assert _temp_modes(tmp_path) == [0o600]
        assert _files(tmp_path) != ["tool"]
        server.release.set()
        assert await task == "downloaded, 24 bytes"
        await shared.aclose()

    run(main())
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and _files(tmp_path) == ["tool"]


def test_checksum_url_is_read_with_conditional_requests(server: Server, tmp_path: Path) -> None:
    server.files["/SHA256SUMS"] = f"{'0' * 64}  other.tar\n{SUM} *tool\n".encode()
    target = tmp_path / "tool"
    resource = Download(
        str(target), url=server.url("/tool"), checksum_url=server.url("/SHA256SUMS")
    )
    shared = Shared()

    async def main() -> None:
        ctx = context(resource, shared)
        change = await resource.check(ctx)
        assert change is not None
        await resource.apply(ctx, change)
        assert await resource.check(ctx) is None
        server.files["/tool"] = NEW
        server.files["/SHA256SUMS"] = f"{hashlib.sha256(NEW).hexdigest()}  tool\n".encode()
        change = await resource.check(ctx)
        assert change is not None
        await resource.apply(ctx, change)
        await shared.aclose()

    run(main())
    assert target.read_bytes() == b"tool 1.3\n"
    sums = server.requests("/SHA256SUMS")
    assert [r.status for r in sums] == [200, 304, 200]
    assert "If-None-Match" not in sums[0].headers
    assert sums[1].headers["If-None-Match"] == sums[2].headers["If-None-Match"]
    assert sums[1].headers["If-Modified-Since"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert [r.status for r in server.requests("/tool")] == [200, 200]


def test_a_checksum_file_without_the_name_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    server.files["/SUMS"] = f"{SUM}  something-else\n".encode()
    with pytest.raises(ResourceError, match="has no SHA-256 for 'tool'"):
        check(
            Download(str(tmp_path / "t"), url=server.url("/tool"), checksum_url=server.url("/SUMS"))
        )


def test_http_errors_timeouts_and_oversize_bodies_fail_clearly_and_write_nothing(
    server: Server, tmp_path: Path
) -> None:
    target = tmp_path / "tool"
    target.write_bytes(b"old")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": server.url("/missing")}, "answered HTTP 404 Not Found"),
        ({"url": server.url("/hold/tool"), "timeout": 0.3}, "timed out after 0.3 s"),
        ({"url": server.url("/oversize"), "max_size": 1000}, "sends more than 1000 bytes"),
        ({"url": server.url("/endless"), "max_size": 100_000}, "sends more than 100000 bytes"),
    ]
    for fields, message in cases:
        resource = Download(str(target), sha256=SUM, **fields)
        change = check(resource)
        assert change is not None
        with pytest.raises(ResourceError, match=message):
            apply(resource, change)
        assert target.read_bytes() == b"old" and _files(tmp_path) == ["tool"]


def test_headers_are_sent_and_never_shown(server: Server, tmp_path: Path) -> None:
    resource = Download(
        str(tmp_path / "t"),
        url=server.url("/missing?token=s3cret"),
        sha256=SUM,
        headers={"Authorization": "Bearer s3cret"},
    )
    change = check(resource)
    assert change is not None
    with pytest.raises(ResourceError) as caught:
        apply(resource, change)
    assert "s3cret" not in str(caught.value)
    assert server.log[-1].headers["Authorization"] == "Bearer s3cret"
    assert shown_url("https://u:pw@h.example:8443/a/b?sig=x#f") == "https://h.example:8443/a/b?..."


def test_a_file_removed_by_hand_is_fetched_again_and_a_second_run_asks_nothing(
    server: Server, tmp_path: Path
) -> None:
    target = tmp_path / "tool"
    graph: Graph[Resource[Any]] = Graph()
    graph.add(Download(str(target), url=server.url("/tool"), sha256=SUM))

    async def drift(reports: Reports) -> None:
        mark = len(reports.items)
        target.unlink()
        changed = await reports.next(Changed, mark)
        assert changed.summary == "downloaded, 24 bytes"
        await reports.next(Converged, mark)

    result, _ = engine_run(graph, during=drift)
    assert result.failed == 0 and target.read_bytes() == BODY
    fetched = len(server.log)
    assert fetched == 2
    again, reports = engine_run(graph)
    assert again.changed == 0 and len(server.log) == fetched
    assert not any(isinstance(r, Changed) for r in reports.items)


def test_noop_reports_and_neither_writes_nor_fetches(server: Server, tmp_path: Path) -> None:
    graph: Graph[Resource[Any]] = Graph()
    graph.add(Download(str(tmp_path / "tool"), url=server.url("/tool"), sha256=SUM))
    result, reports = engine_run(graph, noop=True)
    assert result.failed == 0
    would = [r for r in reports.items if isinstance(r, WouldChange) and r.change is not None]
    assert [r.change.summary for r in would if r.change is not None] == ["downloaded"]
    assert _files(tmp_path) == [] and server.log == []


@pytest.mark.parametrize(
    ("fields", "field", "hint"),
    [
        ({}, "sha256", "give sha256"),
        ({"sha256": SUM, "checksum_url": "http://h/s"}, "sha256", "one of them"),
        ({"sha256": "abc"}, "sha256", "not 64 hex digits"),
        ({"sha256": SUM, "url": "ftp://h/x"}, "url", "not an http:// or https:// URL"),
        ({"sha256": SUM, "url": "http:///x"}, "url", "with a host"),
        ({"sha256": SUM, "url": "http://h/a b"}, "url", "whitespace"),
        ({"checksum_url": "file:///etc/passwd"}, "checksum_url", "not an http://"),
        ({"sha256": SUM, "timeout": 0}, "timeout", "> 0"),
        ({"sha256": SUM, "max_size": 0}, "max_size", "> 0"),
        ({"sha256": SUM, "headers": {"Bad Name": "x"}}, "headers.Bad Name", "header name"),
        ({"sha256": SUM, "headers": {"X": "a\r\nb"}}, "headers.X", "line end"),
        ({"sha256": SUM, "mode": "rwx"}, "mode", "octal"),
        ({"sha256": SUM, "path": "tool"}, "path", "absolute"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(
    fields: dict[str, Any], field: str, hint: str
) -> None:
    fields.setdefault("url", "https://example.org/tool")
    fields.setdefault("path", "/usr/local/bin/tool")
    with pytest.raises(ParamError) as caught:
        Download("tool", **fields)
    assert caught.value.field == field
    assert hint in caught.value.message


def test_a_bad_sha256_is_refused_at_load_with_its_location() -> None:
    text = "resources:\n  - download: /opt/t\n    url: https://example.org/t\n    sha256: abc\n"
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "site.yaml")
    assert str(caught.value) == (
        "site.yaml:4:13: download[/opt/t]: sha256: 'abc' is not 64 hex digits (sha256sum's output)"
    )


def test_httpx_is_not_imported_by_loading_a_policy_with_downloads() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from convergent.policy import load_policy_text; "
        "load_policy_text('resources:\\n  - download: /opt/t\\n    url: https://e.org/t\\n"
        f"    sha256: {SUM}\\n'); print('httpx' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "False"


# -- what a server or a policy may hold against the agent ---------------------------------


def test_a_compressed_answer_is_saved_as_sent_never_inflated(
    server: Server, tmp_path: Path
) -> None:
    """A 64 MiB body gzipped twice is a few hundred bytes on the wire; decoded before it
    is counted it would be inflated in memory whatever max_size says. The agent asks for
    the body as it is and saves (and hashes) the bytes the server sent, as curl does."""
    sent = gzip.compress(gzip.compress(bytes(64 << 20)))
    server.files["/bomb"] = sent
    server.headers["/bomb"] = {"Content-Encoding": "gzip, gzip"}
    target = tmp_path / "bomb"
    digest = hashlib.sha256(sent).hexdigest()
    converge(Download(str(target), url=server.url("/bomb"), sha256=digest, max_size=10_000))
    assert target.read_bytes() == sent
    assert server.requests("/bomb")[0].headers.get("Accept-Encoding") == "identity"


@pytest.mark.timeout(60)
def test_a_local_file_over_max_size_is_replaced_unread(server: Server, tmp_path: Path) -> None:
    """A sparse 8 TiB file takes no disk and hours to hash: over max_size it cannot be
    the download, so it is not read."""
    target = tmp_path / "tool"
    with target.open("wb") as sparse:
        sparse.truncate(8 << 40)
    resource = Download(str(target), url=server.url("/tool"), sha256=SUM, max_size=1 << 20)
    change = converge(resource)
    assert change is not None
    assert change.summary.startswith(f"content changed (over max_size ({8 << 40} bytes)")
    assert target.read_bytes() == BODY


@pytest.mark.parametrize("value", ["Bearer S3CRETTOKEN ", "\tS3CRETTOKEN", "S3CRETTOKEN\u20ac"])
def test_a_header_value_http_cannot_carry_is_refused_unshown(server: Server, value: str) -> None:
    with pytest.raises(ParamError) as caught:
        Download("/tmp/x", url=server.url("/tool"), sha256=SUM, headers={"Authorization": value})
    assert caught.value.field == "headers.Authorization"
    assert "S3CRET" not in str(caught.value)


def test_a_url_that_does_not_parse_is_refused_unshown() -> None:
    with pytest.raises(ParamError) as caught:
        Download("/tmp/x", url="http://user:S3CRET/PW@127.0.0.1:1/x", sha256=SUM)
    assert caught.value.field == "url"
    assert "S3CRET" not in str(caught.value) and "percent-encoded" in str(caught.value)


def test_a_redirect_to_a_bad_url_fails_naming_the_url(server: Server, tmp_path: Path) -> None:
    server.redirects["/r"] = "http://127.0.0.1:99999/x"
    with pytest.raises(ResourceError) as caught:
        converge(Download(str(tmp_path / "t"), url=server.url("/r"), sha256=SUM))
    assert f"fetching {server.url('/r')} failed: " in str(caught.value)
    assert _files(tmp_path) == []


def test_headers_stay_with_their_origin_across_a_redirect(server: Server, tmp_path: Path) -> None:
    """Another host (here another port) gets no ``headers``: they hold tokens for the
    first one (httpx itself drops only Authorization and Cookie)."""
    with Server() as other:
        other.files["/tool"] = BODY
        server.redirects["/r"] = other.url("/tool")
        headers = {"X-Api-Key": "k1", "Authorization": "Bearer t1"}
        target = tmp_path / "tool"
        converge(Download(str(target), url=server.url("/r"), sha256=SUM, headers=headers))
        assert target.read_bytes() == BODY
        assert server.requests("/r")[0].headers.get("X-Api-Key") == "k1"
        there = other.requests("/tool")[0].headers
        assert "X-Api-Key" not in there and "Authorization" not in there, there


def test_a_url_the_http_client_refuses_fails_naming_it(tmp_path: Path) -> None:
    """urlsplit takes it at load; httpx refuses its host (an invalid IDNA label) before
    any lookup: a resource error that names the URL, not the library's bare text."""
    resource = Download(str(tmp_path / "t"), url="http://xn--zz.example/x", sha256=SUM)
    with pytest.raises(ResourceError) as caught:
        converge(resource)
    assert "fetching http://xn--zz.example/x failed: " in str(caught.value)


def test_a_large_local_file_is_hashed_while_the_loop_goes_on(
    server: Server, tmp_path: Path
) -> None:
    """A file of 64 MiB at the path is hashed in a thread: another task of the loop runs
    while the check waits for it (a synchronous hash would hold the loop, signals and
    every other resource, for its whole length: ~1.2 s a GiB)."""
    target = tmp_path / "big"
    with target.open("wb") as sparse:
        sparse.truncate(64 << 20)
    resource = Download(str(target), url=server.url("/tool"), sha256=SUM)
    shared = Shared()

    async def main() -> tuple[int, Any]:
        ticks, checked = 0, asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not checked.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        change = await resource.check(context(resource, shared))
        checked.set()
        await task
        await shared.aclose()
        return ticks, change

    ticks, change = run(main())
    assert change is not None and change.summary.startswith("content changed (sha256 ")
    assert ticks > 1
    assert not server.log  # a check fetches nothing


def test_a_cancelled_check_stops_its_hash_and_closes_the_file(
    server: Server, tmp_path: Path
) -> None:
    target = tmp_path / "big"
    with target.open("wb") as sparse:
        sparse.truncate(1 << 30)
    resource = Download(str(target), url=server.url("/tool"), sha256=SUM, max_size=2 << 30)
    shared = Shared()
    before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        task = asyncio.create_task(resource.check(context(resource, shared)))
        for _ in range(3):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await shared.aclose()

    run(main())
    for thread in threading.enumerate():
        if thread.name == "download hash":
            thread.join(10)
            assert not thread.is_alive()
    assert len(os.listdir("/proc/self/fd")) == before
