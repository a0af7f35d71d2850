"""Every example a new user runs first works as its README section says."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.e2e.agent import Agent

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_python_api_example_converges_and_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "api"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "hello_api.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (root / "f1").read_text() == "i am f1\n"
    assert stat.S_IMODE(os.stat(root / "f2").st_mode) == 0o600
    assert (root / "built").read_text() == "i am f1\ni am f2\n"
    assert "noop[done]: notified by exec[build]" in done.stdout
    assert done.stdout.splitlines()[-1].startswith(
        "resources: 5, repaired: 4 (4 resources), failed: 0"
    )


WEB_PREFIX = "/tmp/convergent-web"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_text(path: Path, text: str, bound: float = 10.0) -> None:
    """Wait (inotify, bounded) until the file at ``path`` contains ``text``."""
    from convergent.resources.fswatch import FsWatcher

    def has() -> bool:
        try:
            return text in path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    async def wait() -> None:
        changed = asyncio.Event()
        watcher = FsWatcher()
        stop = watcher.watch(str(path), changed.set)
        try:
            async with asyncio.timeout(bound):
                while not has():
                    await changed.wait()
                    changed.clear()
        finally:
            stop()
            watcher.close()

    asyncio.run(wait())


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as reply:
        body: bytes = reply.read()
        return body.decode()


def test_webserver_example_serves_the_page_and_restarts_on_a_new_port(tmp_path: Path) -> None:
    """examples/webserver.yaml: the server serves the managed page; a new port in the
    policy rewrites the port file, whose notification restarts the server there."""
    from convergent.resources.procfiles import Store

    text = (EXAMPLES / "webserver.yaml").read_text(encoding="utf-8")
    assert WEB_PREFIX in text and '"8080\\n"' in text
    root, state = tmp_path / "web", tmp_path / "state"
    first, second = _free_port(), _free_port()
    text = text.replace(WEB_PREFIX, str(root))
    policy = tmp_path / "webserver.yaml"
    policy.write_text(text.replace('"8080\\n"', f'"{first}\\n"'), encoding="utf-8")
    log = Path(Store(str(state)).log_path("process[web]"))
    with Agent("run", str(policy), "--state-dir", str(state)) as agent:
        try:
            agent.wait_for_line(lambda line: line.startswith("process[web]: started"))
            _wait_for_text(log, f"Serving HTTP on 127.0.0.1 port {first}")
            assert _get(first) == "<h1>served by convergent</h1>\n"
            policy.write_text(text.replace('"8080\\n"', f'"{second}\\n"'), encoding="utf-8")
            agent.wait_for_line(lambda line: line.startswith("process[web]: restarted on refresh"))
            _wait_for_text(log, f"Serving HTTP on 127.0.0.1 port {second}")
            assert _get(second) == "<h1>served by convergent</h1>\n"
        finally:
            record = Store(str(state)).read("process[web]")
            if record is not None and record.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(record.pid, signal.SIGKILL)
