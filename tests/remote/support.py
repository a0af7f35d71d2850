"""The initiator's side of the remote tests: a HOME of its own (``~/.ssh/known_hosts``),
no ssh agent, and ``convergent run --remote`` run as a user would run it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.agent import Agent

__all__ = ["Initiator", "file_policy", "wait_until"]


def wait_until(path: Path, holds: Callable[[], bool], bound: float = 30.0) -> None:
    """Return once ``holds()``, checked again whenever inotify says ``path`` may have
    changed; AssertionError after ``bound`` seconds."""
    from convergent.resources.fswatch import FsWatcher

    async def main() -> None:
        changed = asyncio.Event()
        watcher = FsWatcher()
        unsubscribe = watcher.watch(str(path), changed.set)
        try:
            async with asyncio.timeout(bound):
                while not holds():
                    await changed.wait()
                    changed.clear()
        except TimeoutError:
            raise AssertionError(f"{path}: not as expected within {bound} s") from None
        finally:
            unsubscribe()
            watcher.close()

    asyncio.run(main())


def file_policy(path: Path, content: str, where: Path) -> Path:
    """A policy that puts ``content`` in ``where``."""
    path.write_text(f'resources:\n  - file: {where}\n    content: "{content}\\n"\n')
    return path


class Initiator:
    """``convergent run`` from a laptop whose home is ``home``."""

    def __init__(self, home: Path, key: Path | None, agent: str | None = None) -> None:
        """``agent``: the socket of the ssh agent the run may use (and forward)."""
        self.home = home
        self.key = key
        (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = dict(os.environ, HOME=str(home))
        self.env.pop("SSH_AUTH_SOCK", None)
        if agent is not None:
            self.env["SSH_AUTH_SOCK"] = agent

    @property
    def known_hosts(self) -> Path:
        return self.home / ".ssh" / "known_hosts"

    def argv(self, *args: str) -> list[str]:
        words = ["run", *args, "--state-dir", str(self.home / "state")]
        if self.key is not None:
            words += ["--identity", str(self.key)]
        return words

    def run(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "convergent", *self.argv(*args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )

    def start(self, *args: str) -> Agent:
        """The same, running: read its lines as they come."""
        old = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            return Agent(*self.argv(*args))
        finally:
            os.environ.clear()
            os.environ.update(old)
