"""A real HTTP server on 127.0.0.1 for the ``download`` tests, in a thread of the test
process: serves files with ETag/Last-Modified (answering conditional requests with 304),
logs every request, and has routes that hold or oversize an answer."""

from __future__ import annotations

import hashlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["LAST_MODIFIED", "Request", "Server"]

LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"
WAIT = 10.0  # the longest a held answer waits for its release


class Request:
    """One request as the server saw it."""

    def __init__(self, path: str, headers: dict[str, str], status: int) -> None:
        self.path = path
        self.headers = headers
        self.status = status

    def __repr__(self) -> str:
        return f"Request({self.path!r}, {self.status})"


class _Quiet(ThreadingHTTPServer):
    """A client that hangs up while an answer is written (``/endless``, ``/oversize``:
    what the agent is meant to do) is no error worth a traceback in the test output."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Server:
    """``with Server() as server:`` serves ``server.files`` (path -> bytes) until the end.

    ``/hold/...``: sets ``requested``, then answers as for ``/...`` once ``release`` is set.
    ``/oversize``: declares a Content-Length of 10**12 and sends 10 bytes.
    ``/endless``: no Content-Length, 1 MiB sent in chunks, then the connection is closed.
    ``redirects`` (path -> URL): answered 302 to that URL. ``headers`` (path -> headers):
    sent with that file (a ``Content-Encoding``, whatever the request asked).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.log: list[Request] = []
        self.requested = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path
                request = Request(path, dict(self.headers.items()), 0)
                server.log.append(request)  # before the answer: the client sees it logged
                if path.startswith("/hold/"):
                    server.requested.set()
                    server.release.wait(WAIT)
                    path = path.removeprefix("/hold")
                self._answer(path, request)

            def _answer(self, path: str, request: Request) -> None:
                if path == "/oversize":
                    request.status = 200
                    self.send_response(200)
                    self.send_header("Content-Length", str(10**12))
                    self.end_headers()
                    self.wfile.write(b"0123456789")
                    self.close_connection = True
                    return
                if path == "/endless":
                    request.status = 200
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for _ in range(16):
                        self.wfile.write(b"x" * 65536)
                    self.close_connection = True
                    return
                if path in server.redirects:
                    request.status = 302
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(path.partition("?")[0])
                if body is None:
                    request.status = 404
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
                if self.headers.get("If-None-Match") == etag:
                    request.status = 304
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                request.status = 200
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", LAST_MODIFIED)
                for name, value in server.headers.get(path, {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._httpd = _Quiet(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def requests(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(WAIT)
