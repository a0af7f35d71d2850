"""The web view's server: uvicorn on the agent's own event loop, beside the engine.

:func:`start` binds the socket itself (an address in use is an error before anything
runs, and port 0 picks a free port), says the address on stderr
(``web view: http://127.0.0.1:PORT/``) and serves until :meth:`WebServer.close`. uvicorn
installs no signal handler here: SIGINT and SIGTERM stay the run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

from convergent.errors import ConvergentError

if TYPE_CHECKING:
    from collections.abc import Callable

    import uvicorn

    from convergent.engine.runner import Engine
    from convergent.web.board import Board
    from convergent.web.options import HttpOptions

__all__ = ["CLOSE_TIMEOUT", "WebServer", "start"]

CLOSE_TIMEOUT = 3.0  # seconds the server may take to stop at the end of a run


class WebServer:
    """A running web view: its address (``url``), its board, its server task."""

    def __init__(self, board: Board, server: uvicorn.Server, task: asyncio.Task[None], url: str):
        self.board = board
        self.server = server
        self.task = task
        self.url = url

    async def close(self) -> None:
        """Stop serving: end the event streams, close the connections, stop following."""
        self.board.close()
        self.server.should_exit = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self.task)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        except Exception:  # the server failed earlier: nothing left to stop
            pass


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def start(engine: Engine, options: HttpOptions, say: Callable[[str], None]) -> WebServer:
    """Serve the web view of ``engine`` as ``options`` say; ``say`` gets the line with
    its address. Raises ConvergentError when the address cannot be bound."""
    try:
        sock = _bind(options.host, options.port)
    except OSError as exc:
        where = _url(options.host, options.port)
        raise ConvergentError(
            f"--http: cannot listen on {where}: {exc.strerror or exc}; "
            "pick another address or port (port 0: any free one)"
        ) from None
    try:
        import uvicorn

        from convergent.web.app import make_app
    except ImportError as exc:
        sock.close()
        raise ConvergentError(
            f"--http: the web view needs starlette and uvicorn ({exc}): "
            "pip install starlette uvicorn"
        ) from None
    from convergent.web.board import Board

    bound_host, port = sock.getsockname()[:2]
    hosts = frozenset(
        f"{name}:{port}" for name in (bound_host, f"[{bound_host}]", "localhost", options.host)
    )
    board = Board(engine)
    app = make_app(board, options.token, hosts)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,
        ws="none",
    )
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])

    async def serve() -> None:
        try:
            await server.main_loop()
        finally:
            await server.shutdown(sockets=[sock])

    task = asyncio.create_task(serve(), name="web view")
    url = _url(bound_host, port)
    say(f"web view: {url}")
    return WebServer(board, server, task, url)
