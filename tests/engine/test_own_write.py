"""A file's own write is an event during its apply: the graph is not reported converged
before the check that event owes has run (issue 15, early convergence)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from convergent.engine import Converged, Engine
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Resource
from convergent.resources.file import File
from tests.engine.support import BOUND, Recorder


class CountedFile(File, kind="countedfile"):
    """A file that counts its checks."""

    checks = 0

    async def check(self, ctx: Context) -> Change | None:
        CountedFile.checks += 1
        return await super().check(ctx)


def test_a_files_own_write_is_checked_before_converged_is_reported(tmp_path: Path) -> None:
    CountedFile.checks = 0
    target = tmp_path / "f"
    g: Graph[Resource[Any]] = Graph()
    g.add(CountedFile(str(target), content="x\n"))
    checks_at_converged: list[int] = []

    async def main() -> None:
        rec = Recorder()

        def reporter(report: Any) -> None:
            if isinstance(report, Converged):
                checks_at_converged.append(CountedFile.checks)
            rec(report)

        engine = Engine(g, reporter=reporter)  # watching: the write's event is seen
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert target.read_text() == "x\n"
    # The first check found the change; the write's own event owed a second one.
    assert checks_at_converged[0] >= 2, checks_at_converged
