"""A file's own write owes no second check (its rename is told apart from a stranger's by
its inotify cookie, docs/performance.md), so the graph is converged after one check; a
change made after that by anyone else is still seen and checked (issue 15 asked that no
event the engine saw be left unchecked when it reports converged)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from convergent.engine import Converged, Engine
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Resource
from convergent.resources.file import File
from convergent.resources.filechange import FileChange
from tests.engine.support import BOUND, Recorder


class CountedFile(File, kind="countedfile"):
    """A file that counts its checks (the first pass's ``check_now`` included: it finds
    the change the pass applies) and says when the second one starts."""

    checks = 0
    second: asyncio.Event | None = None

    @staticmethod
    def _counted() -> None:
        CountedFile.checks += 1
        if CountedFile.checks == 2 and CountedFile.second is not None:
            CountedFile.second.set()

    def check_now(self, ctx: Context) -> bool | FileChange:
        self._counted()
        return super().check_now(ctx)

    async def check(self, ctx: Context) -> Change | None:
        self._counted()
        return await super().check(ctx)


def test_a_files_own_write_owes_no_check_and_a_strangers_change_does(tmp_path: Path) -> None:
    CountedFile.checks = 0
    target = tmp_path / "f"
    g: Graph[Resource[Any]] = Graph()
    g.add(CountedFile(str(target), content="x\n"))
    checks_at_converged: list[int] = []

    async def main() -> None:
        CountedFile.second = asyncio.Event()
        rec = Recorder()

        def reporter(report: Any) -> None:
            if isinstance(report, Converged):
                checks_at_converged.append(CountedFile.checks)
            rec(report)

        engine = Engine(g, reporter=reporter)  # watching: every event is seen
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        os.chmod(target, 0o600)  # a stranger's change: an event on the name
        await asyncio.wait_for(CountedFile.second.wait(), BOUND)
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert target.read_text() == "x\n"
    assert checks_at_converged[0] == 1, checks_at_converged  # the write's own event: none
    assert CountedFile.checks == 2  # the chmod's
