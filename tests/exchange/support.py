"""Helpers of the exchange tests: an engine running a policy in a task, waited on by its
reports."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from convergent.engine import Engine, RunResult
from convergent.policy import load_policy_text
from tests.engine.support import BOUND, Recorder

__all__ = ["BOUND", "Agent", "policy"]


def policy(text: str, tmp: Path) -> Any:
    """The graph of a policy whose text says ``TMP`` for the test's directory."""
    return load_policy_text(text.replace("TMP", str(tmp)), "policy.yaml")


class Agent:
    """An engine running ``graph`` in a task (until :meth:`stop`), with its reports."""

    def __init__(self, graph: Any, **kwargs: Any) -> None:
        self.rec = Recorder()
        self.engine = Engine(graph, reporter=self.rec, **kwargs)
        self.task: asyncio.Task[RunResult] | None = None

    async def __aenter__(self) -> Agent:
        self.task = asyncio.create_task(self.engine.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> RunResult:
        assert self.task is not None
        self.engine.stop()
        async with asyncio.timeout(BOUND):
            return await self.task

    async def converged(self) -> None:
        """Wait until the engine is converged (looked at after each report: it reports
        Converged each time it becomes so)."""
        await self.rec.wait_for(lambda _: self.engine.converged)
